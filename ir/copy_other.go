//go:build !linux

package ir

import "os"

func spliceCopy(dst *os.File, pos int64, src *os.File, off, n int64) (bool, error) {
	return false, nil
}
