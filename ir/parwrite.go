package ir

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
)

// Parallel writing. A save knows where every byte of its output goes before it writes
// any: the streaming encoder sizes each message, and the external data file's offsets
// follow from the tensors' sizes. So the output is cut into pieces at known offsets and
// several workers write them at once, each through a descriptor of its own (a kernel copy
// moves its descriptor's offset): untouched weights are copied file to file by the kernel
// while weights a pass computes (packed Q/K/V, transposes) are computed on other cores.

// copyChunk is the most bytes one piece copies from a file, so that one large table (a
// vocabulary's embeddings) is shared among the workers.
var copyChunk int64 = 16 << 20

// piece is a part of the output at a known offset: literal bytes, a tensor's whole data,
// or bytes [at, at+n) of the file holding a tensor's untouched data.
type piece struct {
	off  int64
	lit  []byte
	d    *dataSource
	file *sourceFile
	at   int64
	n    int64
}

// sourceFile is a file a save copies untouched bytes from. The mapped model is opened
// again by each worker; should its path no longer name the mapped file, the bytes are
// written from the mapping instead.
type sourceFile struct {
	path   string
	mapped *mapping // the mapping these bytes are also in, or nil (external data)
}

// pieces cuts d, at offset off of the output, into pieces: chunks of a file copy when its
// bytes lie untouched in a file, else the whole tensor.
func (d *dataSource) pieces(off int64, out []piece) ([]piece, error) {
	t := d.t
	t.mu.Lock()
	sec, raw := t.sec, t.raw
	t.mu.Unlock()
	var src *sourceFile
	var at int64
	switch e := t.External(); {
	case sec != nil:
		src, at = &sourceFile{path: sec.m.f.Name(), mapped: sec.m}, sec.off
		if sec.n != d.n {
			return nil, fmt.Errorf("tensor %q: %d bytes in the model file, want %d", t.Name, sec.n, d.n)
		}
	case e != nil && raw == nil:
		src, at = &sourceFile{path: e.Path}, e.Offset
	default:
		return append(out, piece{off: off, d: d, n: d.n}), nil
	}
	for k := int64(0); k < d.n; k += copyChunk {
		n := min(copyChunk, d.n-k)
		out = append(out, piece{off: off + k, d: d, file: src, at: at + k, n: n})
	}
	if d.n == 0 {
		out = append(out, piece{off: off, d: d, file: src, at: at})
	}
	return out, nil
}

// writePieces writes the pieces into f at their offsets with up to GOMAXPROCS workers and
// returns the first error; after one, the workers stop taking pieces.
func writePieces(f sinkFile, pieces []piece) error {
	workers := min(runtime.GOMAXPROCS(0), 8, len(pieces))
	var next atomic.Int64
	var failed atomic.Bool
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := work(f, pieces, &next, &failed)
			if err != nil {
				failed.Store(true)
			}
			errs[w] = err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// work is one worker: it takes pieces in order until none or another worker failed.
func work(f sinkFile, pieces []piece, next *atomic.Int64, failed *atomic.Bool) (err error) {
	out, err := reopen(f)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}()
	sources := map[string]*os.File{}
	defer func() {
		for _, s := range sources {
			s.Close()
		}
	}()
	bw := bufio.NewWriterSize(out, 1<<20)
	for !failed.Load() {
		i := int(next.Add(1) - 1)
		if i >= len(pieces) {
			return nil
		}
		p := &pieces[i]
		if _, err := out.Seek(p.off, io.SeekStart); err != nil {
			return err
		}
		switch {
		case p.lit != nil:
			_, err = out.Write(p.lit)
		case p.file != nil:
			err = p.copy(out, sources)
		default:
			bw.Reset(out)
			if err = p.d.writeData(bw); err == nil {
				err = bw.Flush()
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// copy copies the piece from its source file, inside the kernel where it can.
func (p *piece) copy(out sinkFile, sources map[string]*os.File) error {
	src, err := p.file.open(sources)
	if err != nil {
		return fmt.Errorf("tensor %q: %w", p.d.t.Name, err)
	}
	if src == nil { // the mapped file was replaced since it was mapped
		_, err := out.Write(p.file.mapped.data[p.at : p.at+p.n])
		return err
	}
	if _, err := src.Seek(p.at, io.SeekStart); err != nil {
		return err
	}
	k, err := out.ReadFrom(io.LimitReader(src, p.n))
	if err == nil && k != p.n {
		err = fmt.Errorf("%s is short: %d of %d bytes at offset %d", src.Name(), k, p.n, p.at)
	}
	if err != nil {
		return fmt.Errorf("tensor %q: %w", p.d.t.Name, err)
	}
	return nil
}

// open returns this worker's descriptor of the source file, opening it on first use; nil
// when a mapped file's path now names another file.
func (s *sourceFile) open(sources map[string]*os.File) (*os.File, error) {
	if f, ok := sources[s.path]; ok {
		return f, nil
	}
	f, err := os.Open(s.path)
	if s.mapped == nil {
		if err != nil {
			return nil, fmt.Errorf("external data: %w", err)
		}
		sources[s.path] = f
		return f, nil
	}
	if err == nil {
		a, aerr := f.Stat()
		b, berr := s.mapped.f.Stat()
		if aerr != nil || berr != nil || !os.SameFile(a, b) {
			f.Close()
			f = nil
		}
	} else {
		f = nil
	}
	sources[s.path] = f
	return f, nil
}

// reopen returns a new descriptor for writing f, with an offset of its own. Test sinks
// that count or fail writes provide their own.
func reopen(f sinkFile) (sinkFile, error) {
	if r, ok := f.(interface{ reopen() (sinkFile, error) }); ok {
		return r.reopen()
	}
	return os.OpenFile(f.Name(), os.O_WRONLY, 0)
}
