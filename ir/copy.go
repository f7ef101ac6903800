package ir

import (
	"fmt"
	"io"
	"os"
)

// copyRound is the unit in which tensor bytes reach an output file: rounds of 64 KiB,
// each ending at a multiple of 64 KiB in the output, so that the page cache takes them
// in whole 64 KiB folios, as in cp's copy of a whole file (the kernel copies through a
// pipe of sixteen pages). Copied to offsets the protobuf layout leaves anywhere, each
// round split into folios of 4 to 32 KiB, and copying BERT-large took 40 % longer; a
// write of a megabyte makes folios of up to 1 MiB, which were slower still to allocate.
const copyRound = 64 << 10

// roundedMin is the smallest range that goes in aligned rounds (and, in external data,
// starts at a multiple of copyRound): padding it to a round costs at most 1/16 of it,
// and below it the rounds would buy little.
const roundedMin = 16 * copyRound

// pageSize is the page-cache page the kernel's copy rounds are counted in.
const pageSize = 4 << 10

// copyFile appends n bytes of src, from offset off, to dst at its current offset. The
// bytes move inside the kernel and never pass through this process. A large range goes
// in rounds aligned to copyRound in the output: by copy_file_range when the source is
// page-aligned and the output at a multiple of copyRound (the kernel's own rounds then
// line up, and file systems that share blocks, XFS and btrfs, clone them instead of
// copying), otherwise on Linux through a pipe of our own (spliceCopy). The rest, and a
// sink that is not a plain file (tests), go through dst.ReadFrom: copy_file_range or
// sendfile.
func copyFile(dst sinkFile, src *os.File, off, n int64) error {
	if f, ok := dst.(*os.File); ok && n >= roundedMin {
		pos, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			return err
		}
		if off%pageSize != 0 || pos%copyRound != 0 {
			if done, err := spliceCopy(f, pos, src, off, n); done {
				return err
			}
		}
	}
	if _, err := src.Seek(off, io.SeekStart); err != nil {
		return err
	}
	k, err := dst.ReadFrom(io.LimitReader(src, n))
	if err == nil && k != n {
		err = shortFile(src, off+k, n-k)
	}
	return err
}

func shortFile(f *os.File, off, want int64) error {
	return fmt.Errorf("%s is short: %d bytes missing at offset %d", f.Name(), want, off)
}

// roundWriter writes to a file, from offset pos, in pieces that end at multiples of
// copyRound, so that bytes made in memory fill whole folios as copied ones do.
type roundWriter struct {
	w   io.Writer
	pos int64
}

func (r *roundWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k, err := r.w.Write(p[:min(int64(len(p)), copyRound-r.pos%copyRound)])
		n += k
		r.pos += int64(k)
		if err != nil {
			return n, err
		}
		p = p[k:]
	}
	return n, nil
}
