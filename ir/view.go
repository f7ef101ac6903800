package ir

import (
	"io"
	"os"
	"runtime"
)

// View returns t's bytes without copying them where they already lie: the tensor's own
// bytes (the mapped model file's included) or a read-only mapping of its external-data
// range. Bytes decoded or computed lazily are produced and not kept. The slice is valid
// until done is called; a rewrite that reads its sources a row at a time (packing Q, K
// and V) then hands the rows to WriteVec, and the bytes are copied once, by the kernel.
func (t *Tensor) View() (b []byte, done func(), err error) {
	t.mu.Lock()
	raw, ext, mod := t.raw, t.ext, t.modTick
	t.mu.Unlock()
	// The mapping a raw slice may alias lives while t does.
	keep := func() { runtime.KeepAlive(t) }
	if raw != nil {
		return raw, keep, nil
	}
	if ext != nil && !mod {
		n := ext.Length
		if n < 0 {
			n = t.DType.ByteSize(t.NumElements())
		}
		f, err := os.Open(ext.Path)
		if err != nil {
			return nil, nil, err
		}
		defer f.Close()
		// Only a range the file holds is mapped (reading past its end would fault);
		// ReadBytes reports a short file.
		if st, err := f.Stat(); err == nil && ext.Offset >= 0 && ext.Offset+n <= st.Size() {
			if b, unmap, err := mapRange(f, ext.Offset, n); err == nil {
				return b, unmap, nil
			}
		}
	}
	b, err = t.ReadBytes()
	if err != nil {
		return nil, nil, err
	}
	return b, keep, nil
}

// vecWriter writes several buffers in order, in as few system calls as it can.
type vecWriter interface {
	writeVec(bufs [][]byte) (int64, error)
}

// WriteVec writes bufs to w in order: in one system call per batch (writev) when w ends
// in a file, else one Write each.
func WriteVec(w io.Writer, bufs [][]byte) (int64, error) {
	switch w := w.(type) {
	case vecWriter:
		return w.writeVec(bufs)
	case *os.File:
		return writev(w, bufs)
	}
	return writeEach(w, bufs)
}

func writeEach(w io.Writer, bufs [][]byte) (int64, error) {
	var n int64
	for _, b := range bufs {
		k, err := w.Write(b)
		n += int64(k)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (c *countingWriter) writeVec(bufs [][]byte) (int64, error) {
	n, err := WriteVec(c.w, bufs)
	c.n += n
	return n, err
}

// fileSink is a save's buffered writer over its file: Write goes through the buffer,
// writeVec flushes it and gathers straight into the file.
type fileSink struct {
	buf interface {
		io.Writer
		Flush() error
	}
	f sinkFile
}

func (s fileSink) Write(p []byte) (int, error) { return s.buf.Write(p) }

func (s fileSink) writeVec(bufs [][]byte) (int64, error) {
	if err := s.buf.Flush(); err != nil {
		return 0, err
	}
	return WriteVec(s.f, bufs)
}
