// Package modroot finds the module root: the folder holding go.mod, searched for upward
// from the working directory. The shared corpus and the ONNX Runtime cache are found
// relative to it.
package modroot

import (
	"errors"
	"os"
	"path/filepath"
)

// Find returns the module root.
func Find() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}
