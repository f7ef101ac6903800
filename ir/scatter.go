package ir

import (
	"fmt"
	"io"
	"os"
)

// ScatterReader reads a tensor's bytes from an offset into several buffers in turn, so
// that a rewrite interleaving tensors (packing Q, K and V row by row) reads each row
// straight into its place in the output.
type ScatterReader interface {
	// ReadScattered fills dst[0], dst[1], ... with the bytes from off on.
	ReadScattered(off int64, dst [][]byte) error
}

// OpenScatter returns a ScatterReader of t's bytes: from the file they lie in (the
// external-data file, or the model file an inline tensor was mapped from), with one
// system call per batch of buffers (preadv) and no page of a mapping touched; else from
// memory, a lazily computed tensor computed and not kept. done releases it.
func (t *Tensor) OpenScatter() (r ScatterReader, done func() error, err error) {
	t.mu.Lock()
	raw, ext, sec, mod := t.raw, t.ext, t.sec, t.modTick
	t.mu.Unlock()
	n := t.DType.ByteSize(t.NumElements())
	nop := func() error { return nil }
	switch {
	case raw != nil && sec != nil:
		// Positional reads leave the file offset to the saves that copy from it.
		return &fileScatter{f: sec.m.f, base: sec.off, n: sec.n}, nop, nil
	case raw == nil && ext != nil && !mod:
		f, err := os.Open(ext.Path)
		if err != nil {
			return nil, nil, fmt.Errorf("tensor %q: external data: %w", t.Name, err)
		}
		if ext.Length >= 0 {
			n = ext.Length
		}
		return &fileScatter{f: f, base: ext.Offset, n: n}, f.Close, nil
	}
	b, err := t.ReadBytes()
	if err != nil {
		return nil, nil, err
	}
	return memScatter(b), nop, nil
}

type memScatter []byte

func (m memScatter) ReadScattered(off int64, dst [][]byte) error {
	for _, d := range dst {
		if off < 0 || off+int64(len(d)) > int64(len(m)) {
			return fmt.Errorf("reading %d bytes at %d of %d: %w", len(d), off, len(m), io.ErrUnexpectedEOF)
		}
		off += int64(copy(d, m[off:]))
	}
	return nil
}

// fileScatter reads n bytes of f from base.
type fileScatter struct {
	f       *os.File
	base, n int64
}

func (s *fileScatter) ReadScattered(off int64, dst [][]byte) error {
	var total int64
	for _, d := range dst {
		total += int64(len(d))
	}
	if off < 0 || off+total > s.n {
		return fmt.Errorf("%s: reading %d bytes at %d of %d: %w", s.f.Name(), total, off, s.n, io.ErrUnexpectedEOF)
	}
	return preadv(s.f, s.base+off, dst)
}

// readEach is preadv one buffer at a time.
func readEach(f *os.File, off int64, dst [][]byte) error {
	for _, d := range dst {
		k, err := f.ReadAt(d, off)
		if err != nil {
			if err == io.EOF {
				return fmt.Errorf("%s is short: %d of %d bytes at offset %d", f.Name(), k, len(d), off)
			}
			return err
		}
		off += int64(k)
	}
	return nil
}
