package ir

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestLoadNotMapped: a pipe cannot be mapped and is read whole instead; an empty file, a
// truncated one and a folder are refused with a message naming the problem.
func TestLoadNotMapped(t *testing.T) {
	dir := t.TempDir()
	src := streamModel(t, dir)
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "pipe.onnx")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("no named pipes here: %v", err)
	}
	go func() {
		if f, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
			f.Write(data)
			f.Close()
		}
	}()
	m, err := Load(fifo)
	if err != nil {
		t.Fatalf("loading from a pipe: %v", err)
	}
	want, _ := LoadBytes(data, dir)
	a, _ := Marshal(m)
	b, _ := Marshal(want)
	if string(a) != string(b) {
		t.Fatal("a model read from a pipe differs from the file's")
	}

	empty := filepath.Join(dir, "empty.onnx")
	os.WriteFile(empty, nil, 0o644)
	short := filepath.Join(dir, "short.onnx")
	os.WriteFile(short, data[:len(data)-100], 0o644)
	for path, want := range map[string]string{empty: "empty", short: "truncated", dir: "is a directory"} {
		if _, err := Load(path); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Load(%s) = %v, want an error saying %q", filepath.Base(path), err, want)
		}
	}
}
