//go:build linux

package ir

import (
	"errors"
	"os"
	"syscall"
)

const fSetPipeSize = 1031 // F_SETPIPE_SZ

// spliceCopy copies n bytes of src from off to dst's current offset, pos, through a pipe:
// splice(2) in, splice(2) out, one round at a time, each ending at a multiple of
// copyRound in dst. The pipe holds two rounds, so that a round from a source offset
// that is not page-aligned (it takes seventeen pages) is never cut short. done is
// false when nothing was copied and the caller should copy another way: no pipe, or a
// file system that cannot splice.
func spliceCopy(dst *os.File, pos int64, src *os.File, off, n int64) (done bool, err error) {
	var p [2]int
	if syscall.Pipe2(p[:], syscall.O_CLOEXEC) != nil {
		return false, nil
	}
	defer syscall.Close(p[0])
	defer syscall.Close(p[1])
	if _, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(p[1]), fSetPipeSize, 2*copyRound); e != 0 {
		return false, nil
	}
	sc, err := src.SyscallConn()
	if err != nil {
		return false, nil
	}
	dc, err := dst.SyscallConn()
	if err != nil {
		return false, nil
	}
	var moved int64
	var fail, cerr error
	serr := sc.Control(func(sfd uintptr) {
		cerr = dc.Control(func(dfd uintptr) {
			for moved < n {
				want := min(n-moved, copyRound-(pos+moved)%copyRound)
				k, err := spliceRetry(int(sfd), &off, p[1], nil, want)
				if err == nil && k == 0 {
					err = shortFile(src, off, n-moved)
				}
				if err != nil {
					fail = &os.PathError{Op: "splice", Path: src.Name(), Err: err}
					return
				}
				for left := k; left > 0; {
					w, err := spliceRetry(p[0], nil, int(dfd), nil, left)
					if err != nil {
						fail = &os.PathError{Op: "splice", Path: dst.Name(), Err: err}
						return
					}
					left -= w
					moved += w
				}
			}
		})
	})
	if fail == nil {
		fail = errors.Join(serr, cerr)
	}
	if fail != nil && moved == 0 && errors.Is(fail, syscall.EINVAL) {
		return false, nil // this file system cannot splice; nothing was moved
	}
	return true, fail
}

// spliceRetry moves up to n bytes, retrying when a signal interrupts it.
func spliceRetry(rfd int, roff *int64, wfd int, woff *int64, n int64) (int64, error) {
	for {
		k, err := syscall.Splice(rfd, roff, wfd, woff, int(n), 0)
		if err != syscall.EINTR {
			return k, err
		}
	}
}
