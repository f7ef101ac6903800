// Package npz reads and writes NumPy .npy files and .npz archives (a zip of
// .npy members) as ndarray.Arrays.
//
// Only what numpy writes for plain numeric arrays is supported: format
// versions 1.0, 2.0 and 3.0, little-endian (or byte-order-free) dtypes, C
// order. Fortran order, big-endian data, object, string and structured
// dtypes are rejected with an error rather than misread.
package npz

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/qcc-dev/qcc/ndarray"
)

const magic = "\x93NUMPY"

// maxHeaderLen bounds the header we are willing to read; numpy's own headers
// are well under 1 KiB, and a bound keeps corrupt input from allocating GBs.
const maxHeaderLen = 1 << 20

// ReadNPY reads one .npy stream. Trailing bytes after the data are ignored,
// as numpy does.
func ReadNPY(r io.Reader) (*ndarray.Array, error) {
	var pre [8]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return nil, fmt.Errorf("npy: reading magic: %w", noEOF(err))
	}
	if string(pre[:6]) != magic {
		return nil, errors.New("npy: not a .npy file (bad magic)")
	}
	major, minor := pre[6], pre[7]
	var hlen int
	switch major {
	case 1:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("npy: reading header length: %w", noEOF(err))
		}
		hlen = int(binary.LittleEndian.Uint16(b[:]))
	case 2, 3:
		var b [4]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("npy: reading header length: %w", noEOF(err))
		}
		n := binary.LittleEndian.Uint32(b[:])
		if n > maxHeaderLen {
			return nil, fmt.Errorf("npy: header length %d is implausibly large", n)
		}
		hlen = int(n)
	default:
		return nil, fmt.Errorf("npy: unsupported format version %d.%d", major, minor)
	}
	hdr := make([]byte, hlen)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, fmt.Errorf("npy: reading header: %w", noEOF(err))
	}
	dt, shape, err := parseHeader(string(hdr))
	if err != nil {
		return nil, err
	}
	n, err := ndarray.NumElements(shape)
	if err != nil {
		return nil, fmt.Errorf("npy: %w", err)
	}
	size := int64(n) * int64(dt.Size())
	// Grow the buffer as bytes arrive instead of trusting the header's size,
	// so a corrupt shape on a short stream fails without a huge allocation.
	buf := bytes.NewBuffer(make([]byte, 0, min(size, 64<<20)))
	if got, err := io.CopyN(buf, r, size); err != nil {
		return nil, fmt.Errorf("npy: data truncated: %v%v needs %d bytes, got %d: %w", dt, shape, size, got, noEOF(err))
	}
	return &ndarray.Array{DType: dt, Shape: shape, Data: buf.Bytes()}, nil
}

// noEOF turns a bare EOF into ErrUnexpectedEOF: inside a .npy, running out of
// input is always truncation, and callers should not mistake it for a clean end.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// WriteNPY writes a as a .npy stream: format 1.0 unless the header needs 2.0,
// padded so the data starts on a 64-byte boundary, as numpy does.
func WriteNPY(w io.Writer, a *ndarray.Array) error {
	if err := a.Validate(); err != nil {
		return fmt.Errorf("npy: %w", err)
	}
	descr := a.DType.NumpyDescr()
	if descr == "" {
		return fmt.Errorf("npy: numpy has no dtype for %v", a.DType)
	}
	var sb strings.Builder
	sb.WriteString("(")
	for i, d := range a.Shape {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString(strconv.FormatInt(d, 10))
	}
	if len(a.Shape) == 1 {
		sb.WriteString(",")
	}
	sb.WriteString(")")
	dict := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, sb.String())

	var pre []byte
	for _, v := range []struct {
		major, lenBytes int
	}{{1, 2}, {2, 4}} {
		fixed := len(magic) + 2 + v.lenBytes
		total := fixed + len(dict) + 1 // +1 for the closing newline
		pad := (64 - total%64) % 64
		hlen := len(dict) + pad + 1
		if v.major == 1 && hlen > 0xffff {
			continue
		}
		pre = append([]byte(magic), byte(v.major), 0)
		if v.lenBytes == 2 {
			pre = binary.LittleEndian.AppendUint16(pre, uint16(hlen))
		} else {
			pre = binary.LittleEndian.AppendUint32(pre, uint32(hlen))
		}
		pre = append(pre, dict...)
		pre = append(pre, bytes.Repeat([]byte{' '}, pad)...)
		pre = append(pre, '\n')
		break
	}
	if _, err := w.Write(pre); err != nil {
		return err
	}
	_, err := w.Write(a.Data)
	return err
}

// parseHeader reads the Python dict literal of a .npy header.
func parseHeader(h string) (ndarray.DType, []int64, error) {
	p := &litParser{s: h}
	v, err := p.value()
	if err != nil {
		return 0, nil, fmt.Errorf("npy: bad header %q: %w", h, err)
	}
	if rest := strings.TrimSpace(p.s[p.i:]); rest != "" {
		return 0, nil, fmt.Errorf("npy: bad header %q: trailing %q", h, rest)
	}
	d, ok := v.(map[string]any)
	if !ok {
		return 0, nil, fmt.Errorf("npy: bad header %q: not a dict", h)
	}
	descr, ok := d["descr"].(string)
	if !ok {
		if _, isList := d["descr"].([]any); isList {
			return 0, nil, errors.New("npy: structured (record) dtypes are not supported")
		}
		return 0, nil, fmt.Errorf("npy: header %q has no string 'descr'", h)
	}
	fortran, ok := d["fortran_order"].(bool)
	if !ok {
		return 0, nil, fmt.Errorf("npy: header %q has no boolean 'fortran_order'", h)
	}
	shapeT, ok := d["shape"].([]any)
	if !ok {
		return 0, nil, fmt.Errorf("npy: header %q has no tuple 'shape'", h)
	}
	shape := make([]int64, len(shapeT))
	for i, x := range shapeT {
		n, ok := x.(int64)
		if !ok || n < 0 {
			return 0, nil, fmt.Errorf("npy: bad dimension %v in header %q", x, h)
		}
		shape[i] = n
	}
	dt, err := dtypeFromDescr(descr)
	if err != nil {
		return 0, nil, err
	}
	if fortran && len(shape) > 1 {
		// A 0-d or 1-d array is the same in either order; numpy still
		// writes False for them, but accept True there too.
		return 0, nil, errors.New("npy: Fortran-order arrays are not supported (save with np.ascontiguousarray)")
	}
	return dt, shape, nil
}

func dtypeFromDescr(descr string) (ndarray.DType, error) {
	if len(descr) < 2 {
		return 0, fmt.Errorf("npy: bad descr %q", descr)
	}
	order, code := descr[0], descr[1:]
	switch code {
	case "O":
		return 0, errors.New("npy: object arrays are not supported")
	case "?":
		code = "b1"
	}
	if code[0] == 'U' || code[0] == 'S' || code[0] == 'a' || code[0] == 'V' {
		return 0, fmt.Errorf("npy: dtype %q (string/void) is not supported", descr)
	}
	// One-byte types have no byte order, so any order character is fine.
	for _, o := range []string{"|", "<"} {
		if dt, ok := ndarray.FromNumpyDescr(o + code); ok {
			switch {
			case dt.Size() == 1, order == '<':
				return dt, nil
			case order == '>':
				return 0, fmt.Errorf("npy: big-endian dtype %q is not supported (save with a '<' dtype)", descr)
			default:
				return 0, fmt.Errorf("npy: descr %q has no explicit byte order", descr)
			}
		}
	}
	return 0, fmt.Errorf("npy: unsupported dtype %q", descr)
}

// litParser parses the subset of Python literals a .npy header uses: dicts,
// tuples, lists, strings, ints and True/False/None.
type litParser struct {
	s string
	i int
}

func (p *litParser) skip() {
	for p.i < len(p.s) && strings.IndexByte(" \t\r\n", p.s[p.i]) >= 0 {
		p.i++
	}
}

func (p *litParser) peek() byte {
	p.skip()
	if p.i >= len(p.s) {
		return 0
	}
	return p.s[p.i]
}

func (p *litParser) expect(c byte) error {
	if p.peek() != c {
		return fmt.Errorf("expected %q at offset %d", c, p.i)
	}
	p.i++
	return nil
}

func (p *litParser) value() (any, error) {
	switch c := p.peek(); {
	case c == '{':
		p.i++
		m := map[string]any{}
		for p.peek() != '}' {
			k, err := p.value()
			if err != nil {
				return nil, err
			}
			ks, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("non-string dict key at offset %d", p.i)
			}
			if err := p.expect(':'); err != nil {
				return nil, err
			}
			v, err := p.value()
			if err != nil {
				return nil, err
			}
			m[ks] = v
			if p.peek() != ',' {
				break
			}
			p.i++
		}
		return m, p.expect('}')
	case c == '(' || c == '[':
		end := byte(')')
		if c == '[' {
			end = ']'
		}
		p.i++
		items := []any{}
		for p.peek() != end {
			v, err := p.value()
			if err != nil {
				return nil, err
			}
			items = append(items, v)
			if p.peek() != ',' {
				break
			}
			p.i++
		}
		return items, p.expect(end)
	case c == '\'' || c == '"':
		j := strings.IndexByte(p.s[p.i+1:], c)
		if j < 0 {
			return nil, errors.New("unterminated string")
		}
		s := p.s[p.i+1 : p.i+1+j]
		p.i += j + 2
		return s, nil
	case c == '-' || (c >= '0' && c <= '9'):
		j := p.i + 1
		for j < len(p.s) && p.s[j] >= '0' && p.s[j] <= '9' {
			j++
		}
		n, err := strconv.ParseInt(p.s[p.i:j], 10, 64)
		if err != nil {
			return nil, err
		}
		p.i = j
		if p.i < len(p.s) && (p.s[p.i] == 'L' || p.s[p.i] == 'l') {
			p.i++ // Python 2 long suffix, written by old numpy
		}
		return n, nil
	default:
		for word, v := range map[string]any{"True": true, "False": false, "None": nil} {
			if strings.HasPrefix(p.s[p.i:], word) {
				p.i += len(word)
				return v, nil
			}
		}
		return nil, fmt.Errorf("unexpected input at offset %d", p.i)
	}
}
