package text

import (
	"fmt"
	"strings"
)

// Error is a syntax or name-resolution error, located at a 1-based line and byte column.
type Error struct {
	Line, Col int
	Msg       string
}

func (e *Error) Error() string { return fmt.Sprintf("%d:%d: %s", e.Line, e.Col, e.Msg) }

type tokKind int

const (
	tEOF    tokKind = iota
	tIdent          // identifier
	tString         // quoted string, text is the decoded value
	tNumber         // numeric literal (optionally signed), or -inf / -nan
	tPunct          // ( ) [ ] { } < > , = : . ? @ => ...
	tAnnot          // #@ (node metadata annotation)
)

type token struct {
	kind      tokKind
	text      string
	line, col int
}

func (t token) is(punct string) bool { return t.kind == tPunct && t.text == punct }

// describe names a token for "expected X, found Y" messages.
func (t token) describe() string {
	switch t.kind {
	case tEOF:
		return "end of input"
	case tIdent:
		return "identifier " + t.text
	case tString:
		return "string " + quote(t.text)
	case tNumber:
		return "number " + t.text
	case tAnnot:
		return "annotation #@"
	}
	return "'" + t.text + "'"
}

type lexer struct {
	src       string
	off       int
	line      int
	lineStart int
}

func newLexer(src string) *lexer { return &lexer{src: src, line: 1} }

func (l *lexer) col() int { return l.off - l.lineStart + 1 }

func (l *lexer) errAt(line, col int, format string, args ...any) *Error {
	return &Error{Line: line, Col: col, Msg: fmt.Sprintf(format, args...)}
}

func (l *lexer) advance() {
	if l.src[l.off] == '\n' {
		l.line++
		l.lineStart = l.off + 1
	}
	l.off++
}

// skipSpace skips white space and '#' comments, but not the '#@' annotation marker.
func (l *lexer) skipSpace() {
	for l.off < len(l.src) {
		c := l.src[l.off]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			l.advance()
		case c == '#' && !strings.HasPrefix(l.src[l.off:], "#@"):
			for l.off < len(l.src) && l.src[l.off] != '\n' {
				l.off++
			}
		default:
			return
		}
	}
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' }
func isDigit(c byte) bool  { return c >= '0' && c <= '9' }

// next scans one token.
func (l *lexer) next() (token, *Error) {
	l.skipSpace()
	t := token{line: l.line, col: l.col()}
	if l.off >= len(l.src) {
		t.kind = tEOF
		return t, nil
	}
	c := l.src[l.off]
	start := l.off
	switch {
	case isLetter(c):
		for l.off < len(l.src) && (isLetter(l.src[l.off]) || isDigit(l.src[l.off])) {
			l.off++
		}
		t.kind, t.text = tIdent, l.src[start:l.off]
		return t, nil
	case isDigit(c) || c == '-':
		if c == '-' {
			l.off++
			if l.off < len(l.src) && isLetter(l.src[l.off]) { // -inf, -nan
				for l.off < len(l.src) && isLetter(l.src[l.off]) {
					l.off++
				}
				t.kind, t.text = tNumber, l.src[start:l.off]
				return t, nil
			}
			if l.off >= len(l.src) || !isDigit(l.src[l.off]) {
				return t, l.errAt(t.line, t.col, "expected a number after '-'")
			}
		}
		for l.off < len(l.src) && isDigit(l.src[l.off]) {
			l.off++
		}
		if l.off < len(l.src) && l.src[l.off] == '.' && !strings.HasPrefix(l.src[l.off:], "...") {
			l.off++
			for l.off < len(l.src) && isDigit(l.src[l.off]) {
				l.off++
			}
		}
		if l.off < len(l.src) && (l.src[l.off] == 'e' || l.src[l.off] == 'E') {
			save := l.off
			l.off++
			if l.off < len(l.src) && (l.src[l.off] == '+' || l.src[l.off] == '-') {
				l.off++
			}
			if l.off < len(l.src) && isDigit(l.src[l.off]) {
				for l.off < len(l.src) && isDigit(l.src[l.off]) {
					l.off++
				}
			} else {
				l.off = save
			}
		}
		t.kind, t.text = tNumber, l.src[start:l.off]
		return t, nil
	case c == '"':
		s, err := l.str(t)
		t.kind, t.text = tString, s
		return t, err
	case c == '#': // only "#@" reaches here
		l.off += 2
		t.kind, t.text = tAnnot, "#@"
		return t, nil
	case c == '=' && strings.HasPrefix(l.src[l.off:], "=>"):
		l.off += 2
		t.kind, t.text = tPunct, "=>"
		return t, nil
	case c == '.' && strings.HasPrefix(l.src[l.off:], "..."):
		l.off += 3
		t.kind, t.text = tPunct, "..."
		return t, nil
	case strings.IndexByte("()[]{}<>,=:.?@", c) >= 0:
		l.off++
		t.kind, t.text = tPunct, string(c)
		return t, nil
	}
	return t, l.errAt(t.line, t.col, "unexpected character %q", rune(c))
}

// str scans a quoted string. Escapes: \n \t \r \xHH; a backslash before any other
// character stands for that character (so \" and \\ work as in ONNX's parser).
func (l *lexer) str(t token) (string, *Error) {
	l.off++ // opening quote
	var b strings.Builder
	for {
		if l.off >= len(l.src) {
			return "", l.errAt(t.line, t.col, "unterminated string")
		}
		c := l.src[l.off]
		switch c {
		case '"':
			l.off++
			return b.String(), nil
		case '\\':
			if l.off+1 >= len(l.src) {
				return "", l.errAt(t.line, t.col, "unterminated string")
			}
			e := l.src[l.off+1]
			switch e {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case 'r':
				b.WriteByte('\r')
			case 'x':
				if l.off+3 >= len(l.src) || unhex(l.src[l.off+2]) < 0 || unhex(l.src[l.off+3]) < 0 {
					return "", l.errAt(l.line, l.col(), "expected two hex digits after \\x")
				}
				b.WriteByte(byte(unhex(l.src[l.off+2])<<4 | unhex(l.src[l.off+3])))
				l.off += 2
			default:
				if e == '\n' {
					l.line++
					l.lineStart = l.off + 2
				}
				b.WriteByte(e)
			}
			l.off += 2
		default:
			b.WriteByte(c)
			l.advance()
		}
	}
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// rawUntilBrace returns the text up to the next '}' outside a quoted string (the summary
// of an abbreviated tensor) and consumes the brace. The text must stay on one line.
func (l *lexer) rawUntilBrace() (string, *Error) {
	start := l.off
	inStr := false
	for l.off < len(l.src) {
		c := l.src[l.off]
		switch {
		case c == '\n':
			return "", l.errAt(l.line, l.col(), "expected '}' to close the abbreviated tensor on the same line")
		case inStr && c == '\\':
			l.off++
		case c == '"':
			inStr = !inStr
		case c == '}' && !inStr:
			s := strings.TrimSpace(l.src[start:l.off])
			l.off++
			return s, nil
		}
		l.off++
	}
	return "", l.errAt(l.line, l.col(), "expected '}' to close the abbreviated tensor, found end of input")
}
