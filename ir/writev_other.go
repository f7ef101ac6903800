//go:build !linux

package ir

import (
	"errors"
	"os"
)

func writev(f *os.File, bufs [][]byte) (int64, error) { return writeEach(f, bufs) }

// mapRange is not available here: View reads the bytes instead.
func mapRange(f *os.File, off, n int64) ([]byte, func(), error) {
	return nil, nil, errors.New("no mapping on this platform")
}
