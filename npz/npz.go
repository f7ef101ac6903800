package npz

import (
	"archive/zip"
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/qcc-dev/qcc/ndarray"
)

// Read loads every array of the .npz file at path, keyed by member name
// without the ".npy" suffix (the keys np.savez was given).
func Read(path string) (map[string]*ndarray.Array, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	m, err := ReadFrom(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// ReadFrom loads an .npz archive of the given size from r. Stored and
// deflated members are supported (np.savez and np.savez_compressed).
func ReadFrom(r io.ReaderAt, size int64) (map[string]*ndarray.Array, error) {
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return nil, fmt.Errorf("npz: %w", err)
	}
	out := make(map[string]*ndarray.Array, len(zr.File))
	for _, f := range zr.File {
		if strings.HasSuffix(f.Name, "/") {
			continue // directory entry
		}
		key := strings.TrimSuffix(f.Name, ".npy")
		if _, dup := out[key]; dup {
			return nil, fmt.Errorf("npz: duplicate member %q", f.Name)
		}
		a, err := readMember(f)
		if err != nil {
			return nil, fmt.Errorf("npz: member %q: %w", f.Name, err)
		}
		out[key] = a
	}
	return out, nil
}

func readMember(f *zip.File) (*ndarray.Array, error) {
	rc, err := f.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	a, err := ReadNPY(rc)
	if err != nil {
		return nil, err
	}
	// Drain the rest so the zip reader verifies the member's CRC-32.
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return nil, err
	}
	return a, nil
}

// Write saves arrays as an uncompressed .npz (like np.savez). Members are
// written in sorted key order with a fixed timestamp, so equal inputs give
// byte-identical files. The file is written to a temporary name and renamed,
// so readers never see a partial archive.
func Write(path string, arrays map[string]*ndarray.Array) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	bw := bufio.NewWriterSize(tmp, 1<<20)
	err = WriteTo(bw, arrays)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	// CreateTemp makes the file 0600; give it the usual 0644.
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// WriteTo writes arrays as an uncompressed .npz stream; see Write.
func WriteTo(w io.Writer, arrays map[string]*ndarray.Array) error {
	keys := make([]string, 0, len(arrays))
	for k := range arrays {
		if k == "" || strings.ContainsRune(k, 0) {
			return fmt.Errorf("npz: invalid key %q", k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	zw := zip.NewWriter(w)
	for _, k := range keys {
		// Fixed time: the zip's only non-deterministic field.
		hdr := &zip.FileHeader{Name: k + ".npy", Method: zip.Store, Modified: time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)}
		mw, err := zw.CreateHeader(hdr)
		if err != nil {
			return fmt.Errorf("npz: %w", err)
		}
		if err := WriteNPY(mw, arrays[k]); err != nil {
			return fmt.Errorf("npz: array %q: %w", k, err)
		}
	}
	return zw.Close()
}
