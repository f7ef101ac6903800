package ir

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
)

// mapping is a model file held read-only in memory (mapped where the platform allows) so
// that inline tensors can alias its bytes instead of copying them.
//
// Lifetime: every tensor aliasing the mapping points at it, so it stays while any such
// tensor does. Once a tensor's bytes have been handed out (Tensor.Bytes), a caller may keep
// the slice beyond the tensor, which the garbage collector cannot see for memory it does
// not own; such a mapping is then never unmapped (it costs address space, not memory: the
// kernel drops clean file pages under pressure). A mapping nobody read from is unmapped
// when it becomes unreachable.
type mapping struct {
	data  []byte
	f     *os.File   // kept open: saves copy untouched bytes from it inside the kernel
	mu    sync.Mutex // f's offset, moved by each copy
	state *mapState
}

type mapState struct {
	data    []byte
	f       *os.File
	unmap   func([]byte) error
	escaped atomic.Bool
}

// openMapping maps path read-only. The file is never written through the mapping.
func openMapping(path string) (*mapping, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		// Pipes and devices cannot be mapped, nor copied from by offset, nor opened again
		// (a pipe's writer is gone): read them whole from here.
		data, err := io.ReadAll(f)
		f.Close()
		if err != nil {
			return nil, err
		}
		return nil, &notRegular{data}
	}
	size := st.Size()
	if size == 0 {
		f.Close()
		return nil, nil
	}
	if int64(int(size)) != size {
		f.Close()
		return nil, fmt.Errorf("%s: %d bytes do not fit in memory", path, size)
	}
	data, unmap, err := mapFile(f, int(size))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s := &mapState{data: data, f: f, unmap: unmap}
	m := &mapping{data: data, f: f, state: s}
	runtime.AddCleanup(m, func(s *mapState) {
		if s.escaped.Load() {
			return
		}
		if s.unmap != nil {
			s.unmap(s.data)
		}
		s.f.Close()
	}, s)
	return m, nil
}

// notRegular carries the contents of a file that could not be mapped.
type notRegular struct{ data []byte }

func (*notRegular) Error() string { return "not a regular file" }

// escape records that a slice of the mapping left the package's control.
func (m *mapping) escape() { m.state.escaped.Store(true) }

// section is a run of bytes of a mapped file: an inline tensor's raw_data.
type section struct {
	m   *mapping
	off int64
	n   int64
}

func (s *section) bytes() []byte { return s.m.data[s.off : s.off+s.n] }
