package main

import (
	"errors"
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
)

// A strict JSON reader for the records of the predictions topic. encoding/json is too lenient for an
// edge that must refuse whatever the Python server refuses: it turns invalid UTF-8 and lone surrogate
// escapes into U+FFFD, where pydantic refuses the record. This one refuses those, and duplicate keys too
// (pydantic keeps the last: refusing is the stricter answer), and keeps each number as its literal so
// that it is read once, as its field's type.

type jsonKind int

const (
	jsonNull jsonKind = iota
	jsonBool
	jsonNumber
	jsonString
	jsonArray
	jsonObject
)

func (k jsonKind) String() string {
	return [...]string{"null", "a boolean", "a number", "a string", "an array", "an object"}[k]
}

type jsonValue struct {
	kind    jsonKind
	text    string // a string's value; a number's literal
	integer bool   // a number without fraction or exponent
	items   []jsonValue
	members []jsonMember // in document order
}

type jsonMember struct {
	name  string
	value jsonValue
}

// maxDepth bounds nesting: a prediction nests three deep, and a record cannot exhaust the stack.
const maxDepth = 16

type jsonReader struct {
	b   []byte
	pos int
}

func parseJSON(b []byte) (jsonValue, error) {
	r := &jsonReader{b: b}
	r.space()
	if r.pos == len(b) {
		return jsonValue{}, errors.New("invalid JSON: no value")
	}
	v, err := r.value(0)
	if err != nil {
		return jsonValue{}, err
	}
	r.space()
	if r.pos != len(b) {
		return jsonValue{}, r.fail("trailing characters")
	}
	return v, nil
}

func (r *jsonReader) fail(what string) error {
	return fmt.Errorf("invalid JSON: %s at byte %d", what, r.pos)
}

func (r *jsonReader) space() {
	for r.pos < len(r.b) {
		switch r.b[r.pos] {
		case ' ', '\t', '\n', '\r':
			r.pos++
		default:
			return
		}
	}
}

func (r *jsonReader) literal(word string) bool {
	if len(r.b)-r.pos >= len(word) && string(r.b[r.pos:r.pos+len(word)]) == word {
		r.pos += len(word)
		return true
	}
	return false
}

func (r *jsonReader) value(depth int) (jsonValue, error) {
	if depth > maxDepth {
		return jsonValue{}, r.fail("nested too deep")
	}
	if r.pos == len(r.b) {
		return jsonValue{}, r.fail("unexpected end")
	}
	switch c := r.b[r.pos]; {
	case c == '{':
		return r.object(depth)
	case c == '[':
		return r.array(depth)
	case c == '"':
		s, err := r.string()
		return jsonValue{kind: jsonString, text: s}, err
	case c == '-' || (c >= '0' && c <= '9'):
		return r.number()
	case r.literal("true"), r.literal("false"):
		return jsonValue{kind: jsonBool}, nil
	case r.literal("null"):
		return jsonValue{kind: jsonNull}, nil
	}
	return jsonValue{}, r.fail("unexpected character")
}

// elements reads an object's or array's elements up to its closing byte, each with read (called at
// the element, past the space before it).
func (r *jsonReader) elements(closing byte, read func() error) error {
	r.pos++ // the opening '{' or '['
	r.space()
	if r.pos < len(r.b) && r.b[r.pos] == closing {
		r.pos++
		return nil
	}
	for {
		r.space()
		if err := read(); err != nil {
			return err
		}
		r.space()
		if r.pos == len(r.b) {
			return r.fail("unexpected end")
		}
		switch r.b[r.pos] {
		case ',':
			r.pos++
		case closing:
			r.pos++
			return nil
		default:
			return r.fail(fmt.Sprintf("expected ',' or '%c'", closing))
		}
	}
}

func (r *jsonReader) object(depth int) (jsonValue, error) {
	v := jsonValue{kind: jsonObject}
	seen := map[string]bool{}
	err := r.elements('}', func() error {
		if r.pos == len(r.b) || r.b[r.pos] != '"' {
			return r.fail("expected a key")
		}
		name, err := r.string()
		if err != nil {
			return err
		}
		if seen[name] {
			return fmt.Errorf("invalid JSON: duplicate key %q", name)
		}
		seen[name] = true
		r.space()
		if r.pos == len(r.b) || r.b[r.pos] != ':' {
			return r.fail("expected ':'")
		}
		r.pos++
		r.space()
		item, err := r.value(depth + 1)
		if err != nil {
			return err
		}
		v.members = append(v.members, jsonMember{name, item})
		return nil
	})
	return v, err
}

func (r *jsonReader) array(depth int) (jsonValue, error) {
	v := jsonValue{kind: jsonArray}
	err := r.elements(']', func() error {
		item, err := r.value(depth + 1)
		if err != nil {
			return err
		}
		v.items = append(v.items, item)
		return nil
	})
	return v, err
}

func (r *jsonReader) hex4() (rune, bool) {
	if len(r.b)-r.pos < 4 {
		return 0, false
	}
	var v rune
	for _, c := range r.b[r.pos : r.pos+4] {
		v <<= 4
		switch {
		case c >= '0' && c <= '9':
			v |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			v |= rune(c-'a') + 10
		case c >= 'A' && c <= 'F':
			v |= rune(c-'A') + 10
		default:
			return 0, false
		}
	}
	r.pos += 4
	return v, true
}

func (r *jsonReader) string() (string, error) {
	r.pos++ // "
	var out []byte
	for {
		if r.pos == len(r.b) {
			return "", r.fail("unterminated string")
		}
		c := r.b[r.pos]
		switch {
		case c == '"':
			r.pos++
			return string(out), nil
		case c < 0x20:
			return "", r.fail("control character in a string")
		case c == '\\':
			r.pos++
			if r.pos == len(r.b) {
				return "", r.fail("unterminated escape")
			}
			e := r.b[r.pos]
			r.pos++
			switch e {
			case '"', '\\', '/':
				out = append(out, e)
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				u, ok := r.hex4()
				if !ok {
					return "", r.fail("bad \\u escape")
				}
				if utf16.IsSurrogate(u) {
					// Only a high surrogate followed by a low one is a character; pydantic refuses the rest.
					if u >= 0xdc00 || !r.literal(`\u`) {
						return "", r.fail("lone surrogate escape")
					}
					low, ok := r.hex4()
					if !ok || low < 0xdc00 || low > 0xdfff {
						return "", r.fail("lone surrogate escape")
					}
					u = utf16.DecodeRune(u, low)
				}
				out = utf8.AppendRune(out, u)
			default:
				return "", r.fail("bad escape")
			}
		default:
			ch, size := utf8.DecodeRune(r.b[r.pos:])
			if ch == utf8.RuneError && size <= 1 {
				return "", r.fail("invalid UTF-8")
			}
			out = append(out, r.b[r.pos:r.pos+size]...)
			r.pos += size
		}
	}
}

func (r *jsonReader) digits() int {
	start := r.pos
	for r.pos < len(r.b) && r.b[r.pos] >= '0' && r.b[r.pos] <= '9' {
		r.pos++
	}
	return r.pos - start
}

// number reads JSON's grammar exactly: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func (r *jsonReader) number() (jsonValue, error) {
	start := r.pos
	if r.b[r.pos] == '-' {
		r.pos++
	}
	if r.pos < len(r.b) && r.b[r.pos] == '0' {
		r.pos++
	} else if r.digits() == 0 {
		return jsonValue{}, r.fail("invalid number")
	}
	integer := true
	if r.pos < len(r.b) && r.b[r.pos] == '.' {
		r.pos++
		integer = false
		if r.digits() == 0 {
			return jsonValue{}, r.fail("invalid number")
		}
	}
	if r.pos < len(r.b) && (r.b[r.pos] == 'e' || r.b[r.pos] == 'E') {
		r.pos++
		integer = false
		if r.pos < len(r.b) && (r.b[r.pos] == '+' || r.b[r.pos] == '-') {
			r.pos++
		}
		if r.digits() == 0 {
			return jsonValue{}, r.fail("invalid number")
		}
	}
	return jsonValue{kind: jsonNumber, text: string(r.b[start:r.pos]), integer: integer}, nil
}
