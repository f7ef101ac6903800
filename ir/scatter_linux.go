//go:build linux

package ir

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"
)

// iovMax is the most buffers one preadv takes (IOV_MAX).
const iovMax = 1024

// preadv reads from off into dst in order with preadv(2), a batch of iovMax buffers at a
// time, resuming after a short read.
func preadv(f *os.File, off int64, dst [][]byte) error {
	raw, err := f.SyscallConn()
	if err != nil || unsafe.Sizeof(uintptr(0)) < 8 { // the offset is passed as one word
		return readEach(f, off, dst)
	}
	iov := make([]syscall.Iovec, 0, min(len(dst), iovMax))
	for len(dst) > 0 {
		iov = iov[:0]
		var want int64
		for _, b := range dst[:min(len(dst), iovMax)] {
			if len(b) > 0 {
				iov = append(iov, syscall.Iovec{Base: &b[0], Len: uint64(len(b))})
				want += int64(len(b))
			}
		}
		if want == 0 {
			return nil
		}
		var n uintptr
		var errno syscall.Errno
		rerr := raw.Read(func(fd uintptr) bool {
			for {
				// On 64-bit Linux the offset is one argument; the high word is 0.
				n, _, errno = syscall.Syscall6(syscall.SYS_PREADV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)), uintptr(off), 0, 0)
				if errno != syscall.EINTR {
					return true
				}
			}
		})
		switch {
		case rerr != nil:
			return rerr
		case errno != 0:
			return &os.PathError{Op: "preadv", Path: f.Name(), Err: errno}
		case n == 0:
			return fmt.Errorf("%s is short: no bytes at offset %d", f.Name(), off)
		}
		off += int64(n)
		// Drop what was read: whole buffers, then the start of a partly filled one.
		left := int64(n)
		for len(dst) > 0 && left >= int64(len(dst[0])) {
			left -= int64(len(dst[0]))
			dst = dst[1:]
		}
		if left > 0 {
			dst = append([][]byte{dst[0][left:]}, dst[1:]...)
		}
	}
	return nil
}
