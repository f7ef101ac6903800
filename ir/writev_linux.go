//go:build linux

package ir

import (
	"os"
	"syscall"
	"unsafe"
)

// iovMax is the most buffers one writev takes (IOV_MAX on Linux).
const iovMax = 1024

// writev writes bufs to f with writev(2), a batch of iovMax at a time, resuming after a
// short write.
func writev(f *os.File, bufs [][]byte) (int64, error) {
	raw, err := f.SyscallConn()
	if err != nil {
		return writeEach(f, bufs)
	}
	var total int64
	iov := make([]syscall.Iovec, 0, min(len(bufs), iovMax))
	for len(bufs) > 0 {
		iov = iov[:0]
		for _, b := range bufs[:min(len(bufs), iovMax)] {
			if len(b) > 0 {
				iov = append(iov, syscall.Iovec{Base: &b[0], Len: uint64(len(b))})
			}
		}
		var n uintptr
		var errno syscall.Errno
		if len(iov) > 0 {
			werr := raw.Write(func(fd uintptr) bool {
				for {
					n, _, errno = syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
					if errno != syscall.EINTR {
						return true
					}
				}
			})
			if werr != nil {
				return total, werr
			}
			if errno != 0 {
				return total, &os.PathError{Op: "writev", Path: f.Name(), Err: errno}
			}
			if n == 0 {
				return total, &os.PathError{Op: "writev", Path: f.Name(), Err: syscall.EIO}
			}
		}
		total += int64(n)
		// Drop what was written: whole buffers, then the start of a partly written one.
		left := int64(n)
		for len(bufs) > 0 && left >= int64(len(bufs[0])) {
			left -= int64(len(bufs[0]))
			bufs = bufs[1:]
		}
		if left > 0 {
			rest := append([][]byte{bufs[0][left:]}, bufs[1:]...)
			bufs = rest
		}
	}
	return total, nil
}

// mapRange maps n bytes of f from off read-only; done unmaps them.
func mapRange(f *os.File, off, n int64) ([]byte, func(), error) {
	if n == 0 {
		return []byte{}, func() {}, nil
	}
	page := int64(os.Getpagesize())
	start := off - off%page
	size := off + n - start
	if int64(int(size)) != size {
		return nil, nil, syscall.EFBIG
	}
	m, err := syscall.Mmap(int(f.Fd()), start, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, err
	}
	syscall.Madvise(m, syscall.MADV_SEQUENTIAL)
	return m[off-start:], func() { syscall.Munmap(m) }, nil
}
