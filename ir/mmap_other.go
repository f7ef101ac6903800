//go:build !linux

package ir

import (
	"io"
	"os"
)

// mapFile reads the file where mapping is not available: the same aliasing then holds
// on a heap copy.
func mapFile(f *os.File, size int) ([]byte, func([]byte) error, error) {
	b := make([]byte, size)
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, int64(size)), b); err != nil {
		return nil, nil, err
	}
	return b, nil, nil
}
