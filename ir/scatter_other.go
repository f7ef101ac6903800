//go:build !linux

package ir

import "os"

func preadv(f *os.File, off int64, dst [][]byte) error { return readEach(f, off, dst) }
