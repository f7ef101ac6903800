// Package txtar reads and writes the txtar archive format used by golden tests: a free-form
// comment, then files introduced by "-- name --" lines.
package txtar

import (
	"bytes"
	"strings"
)

// File is one file of an archive.
type File struct {
	Name string
	Data []byte
}

// Archive is a parsed txtar file.
type Archive struct {
	Comment []byte
	Files   []File
}

// Parse splits data into its comment and files. It never fails: text before the first
// marker is the comment.
func Parse(data []byte) *Archive {
	a := &Archive{}
	var cur *File
	var buf bytes.Buffer
	flush := func() {
		if cur == nil {
			a.Comment = append([]byte(nil), buf.Bytes()...)
		} else {
			cur.Data = append([]byte(nil), buf.Bytes()...)
			a.Files = append(a.Files, *cur)
		}
		buf.Reset()
	}
	for _, line := range strings.SplitAfter(string(data), "\n") {
		if name, ok := marker(line); ok {
			flush()
			cur = &File{Name: name}
			continue
		}
		buf.WriteString(line)
	}
	flush()
	return a
}

func marker(line string) (string, bool) {
	l := strings.TrimRight(line, "\r\n")
	if strings.HasPrefix(l, "-- ") && strings.HasSuffix(l, " --") && len(l) > 6 {
		return strings.TrimSpace(l[3 : len(l)-3]), true
	}
	return "", false
}

// Format serializes an archive; each file ends with a newline.
func Format(a *Archive) []byte {
	var b bytes.Buffer
	b.Write(a.Comment)
	for _, f := range a.Files {
		b.WriteString("-- " + f.Name + " --\n")
		b.Write(f.Data)
		if len(f.Data) > 0 && f.Data[len(f.Data)-1] != '\n' {
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

// Get returns the named file's data.
func (a *Archive) Get(name string) ([]byte, bool) {
	for _, f := range a.Files {
		if f.Name == name {
			return f.Data, true
		}
	}
	return nil, false
}

// Set replaces or appends the named file.
func (a *Archive) Set(name string, data []byte) {
	for i, f := range a.Files {
		if f.Name == name {
			a.Files[i].Data = data
			return
		}
	}
	a.Files = append(a.Files, File{name, data})
}
