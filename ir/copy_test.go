package ir

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// copyCase writes prefix bytes to a fresh file, appends n bytes of src from off with
// copy, then one more byte, and checks the whole file.
func copyCase(t *testing.T, src *os.File, data []byte, prefix int, off, n int64, flag int, copy func(dst *os.File) error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dst")
	dst, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|flag, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	head := bytes.Repeat([]byte{0xAB}, prefix)
	if _, err := dst.Write(head); err != nil {
		t.Fatal(err)
	}
	if err := copy(dst); err != nil {
		t.Fatalf("prefix %d, off %d, n %d: %v", prefix, off, n, err)
	}
	if _, err := dst.Write([]byte{0xCD}); err != nil { // lands right after the copy
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := append(append(head, data[off:off+n]...), 0xCD)
	if !bytes.Equal(got, want) {
		t.Fatalf("prefix %d, off %d, n %d: file of %d bytes differs from the %d expected", prefix, off, n, len(got), len(want))
	}
}

func randomFile(t *testing.T, n int) (*os.File, []byte) {
	t.Helper()
	data := make([]byte, n)
	r := rand.New(rand.NewPCG(7, 8))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	path := filepath.Join(t.TempDir(), "src")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, data
}

// TestCopyFile: copyFile appends exactly the range asked for and leaves the output's
// offset after it, for small ranges (the kernel's copy) and large ones (rounds through a
// pipe), whatever the alignment of the source offset and of the output's.
func TestCopyFile(t *testing.T) {
	src, data := randomFile(t, 3<<20+12345)
	for _, prefix := range []int{0, 3, copyRound - 1, copyRound, 100000} {
		for _, off := range []int64{0, 1, 100, 4096, copyRound + 7} {
			for _, n := range []int64{1, copyRound, roundedMin, roundedMin + 13, 2<<20 + 4095} {
				copyCase(t, src, data, prefix, off, n, 0, func(dst *os.File) error { return copyFile(dst, src, off, n) })
			}
		}
	}
	// A sink opened to append cannot take a splice: the copy goes the other way.
	copyCase(t, src, data, 5, 100, 2<<20, os.O_APPEND, func(dst *os.File) error { return copyFile(dst, src, 100, 2<<20) })
}

// TestSpliceCopy: on Linux the large-range path is taken (not fallen back from) and
// moves the same bytes.
func TestSpliceCopy(t *testing.T) {
	src, data := randomFile(t, 3<<20+12345)
	copyCase(t, src, data, 777, 4097, 2<<20+5, 0, func(dst *os.File) error {
		done, err := spliceCopy(dst, 777, src, 4097, 2<<20+5)
		if !done && runtime.GOOS == "linux" {
			t.Fatal("spliceCopy fell back on Linux")
		}
		if !done {
			return copyFile(dst, src, 4097, 2<<20+5)
		}
		return err
	})
}

// TestCopyFileShort: a source that ends before the range does names the file and the
// offset, on both paths.
func TestCopyFileShort(t *testing.T) {
	src, _ := randomFile(t, 3<<20)
	for _, n := range []int64{copyRound, 2 << 20} {
		dst, err := os.Create(filepath.Join(t.TempDir(), "dst"))
		if err != nil {
			t.Fatal(err)
		}
		err = copyFile(dst, src, 3<<20-100, n)
		dst.Close()
		if err == nil || !strings.Contains(err.Error(), "is short") || !strings.Contains(err.Error(), src.Name()) {
			t.Errorf("n %d: err = %v, want one naming %s as short", n, err, src.Name())
		}
	}
}

// TestCopyFileFails: a sink that refuses the bytes (opened read-only) gets an error
// from either path, naming the file.
func TestCopyFileFails(t *testing.T) {
	src, _ := randomFile(t, 3<<20)
	path := filepath.Join(t.TempDir(), "dst")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int64{copyRound, 2 << 20} {
		dst, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		err = copyFile(dst, src, 0, n)
		dst.Close()
		if err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("n %d: copy to a read-only file: err = %v, want one naming %s", n, err, path)
		}
	}
}

// recorder keeps each Write's bytes apart.
type recorder struct{ pieces [][]byte }

func (r *recorder) Write(p []byte) (int, error) {
	r.pieces = append(r.pieces, bytes.Clone(p))
	return len(p), nil
}

// TestRoundWriter: no piece written crosses a multiple of copyRound, and the pieces are
// the bytes written, in order.
func TestRoundWriter(t *testing.T) {
	for _, pos := range []int64{0, 100, copyRound - 1, 5 * copyRound} {
		rec := &recorder{}
		w := &roundWriter{w: rec, pos: pos}
		var all []byte
		for _, n := range []int{10, 3 * copyRound, 1, 1 << 20} {
			b := bytes.Repeat([]byte{byte(n)}, n)
			if k, err := w.Write(b); k != n || err != nil {
				t.Fatalf("Write(%d) = %d, %v", n, k, err)
			}
			all = append(all, b...)
		}
		if got := bytes.Join(rec.pieces, nil); !bytes.Equal(got, all) {
			t.Fatalf("pos %d: the pieces are not the bytes written", pos)
		}
		start := pos
		for i, p := range rec.pieces {
			end := start + int64(len(p))
			if start/copyRound != (end-1)/copyRound {
				t.Fatalf("pos %d: piece %d, bytes %d to %d, crosses a round", pos, i, start, end)
			}
			start = end
		}
	}
}

// TestPlaceAfter: tensor data in an external file starts 64-byte aligned, large tensors
// at a multiple of copyRound, never before the offset given and with less than one
// alignment of padding.
func TestPlaceAfter(t *testing.T) {
	for _, off := range []int64{0, 1, 63, 64, 65, copyRound - 1, copyRound, copyRound + 1, 123456789} {
		for _, n := range []int64{0, 1, 4096, roundedMin - 1, roundedMin, 1 << 30} {
			a := int64(64)
			if n >= roundedMin {
				a = copyRound
			}
			got := placeAfter(off, n)
			if got < off || got-off >= a || got%a != 0 {
				t.Errorf("placeAfter(%d, %d) = %d, want the first multiple of %d at or after it", off, n, got, a)
			}
		}
	}
}
