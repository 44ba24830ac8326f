package main

// The JSON string writer: most of the exporter's work. One pass over the
// bytes, 8 at a time, validates UTF-8 and escapes as it copies.

import (
	"encoding/binary"
	"math/bits"
	"slices"
	"unicode/utf8"
)

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// careMask returns x (8 bytes of a string, little-endian) with the high bit
// set in each byte that is not plain ASCII written as it is: a byte below
// 0x20, '"', '\\' or a byte from 0x80. Only the lowest set byte is exact
// (a borrow may also mark bytes above it), which is the one the writer
// uses. (Bit tricks from "Bit Twiddling Hacks", "Determine if a word has a
// byte less than n".)
func careMask(x uint64) uint64 {
	q := x ^ ('"' * ones)
	bs := x ^ ('\\' * ones)
	return ((x-0x20*ones)&^x | (q-ones)&^q | (bs-ones)&^bs | x) & highs
}

// escapes[c] is how the ASCII byte c is written inside a JSON string when it
// needs an escape ('"', '\\', a control character): up to 6 bytes,
// little-endian, with their number in the top byte (one load for both). It
// is 0 for the bytes written as they are.
var escapes = func() (t [utf8.RuneSelf]uint64) {
	const hex = "0123456789abcdef"
	for c := range 0x20 {
		e := []byte{'\\', 'u', '0', '0', hex[c>>4], hex[c&0xf]}
		switch c {
		case '\n':
			e = []byte(`\n`)
		case '\r':
			e = []byte(`\r`)
		case '\t':
			e = []byte(`\t`)
		case '\b':
			e = []byte(`\b`)
		case '\f':
			e = []byte(`\f`)
		}
		t[c] = binary.LittleEndian.Uint64(append(e, 0, 0, 0, 0, 0, 0, 0, 0)) | uint64(len(e))<<56
	}
	t['"'] = '\\' | '"'<<8 | 2<<56
	t['\\'] = '\\' | '\\'<<8 | 2<<56
	return t
}()

// leads[c] describes the first byte c of a multi-byte UTF-8 sequence: its
// length (2 to 4; 0 if c never starts a valid one) and the range its second
// byte must be in, which refuses overlong forms, surrogates and code points
// above U+10FFFF as utf8.DecodeRune does.
var leads = func() (t [256]struct{ n, lo, hi byte }) {
	for c := 0xc2; c < 0xf5; c++ {
		n := byte(2)
		if c >= 0xf0 {
			n = 4
		} else if c >= 0xe0 {
			n = 3
		}
		t[c] = struct{ n, lo, hi byte }{n, 0x80, 0xbf}
	}
	t[0xe0].lo = 0xa0
	t[0xed].hi = 0x9f
	t[0xf0].lo = 0x90
	t[0xf4].hi = 0x8f
	return t
}()

// stringSlack is how many bytes of room, beyond one a byte of input still to
// read, the writers keep at the end of their output: one 8-byte store past
// the end and the closing quote.
const stringSlack = 8 + 1

// appendString appends s as a JSON string, the same bytes as encoding/json
// without HTML escaping except for invalid UTF-8: it escapes '"', '\\', the
// control characters (as \n, \r, \t, \b, \f or \u00XX) and U+2028 and
// U+2029; it does not escape '<', '>' or '&'. Each byte of s that is not
// part of valid UTF-8 is written as U+FFFD (encoding/json writes \ufffd).
//
// One pass, no call a byte: plain ASCII is loaded and stored 8 bytes at a
// time; a word that holds a byte needing care is stored all the same and
// the output advanced only to that byte, which is then escaped with a table
// lookup and one store, or starts a run of multi-byte characters that
// copyMultibyte checks and copies. The output keeps room for every byte
// still to read plus stringSlack, so the stores need no other check; only
// an escape, longer than what it replaces, may have to grow it.
func appendString(b, s []byte) []byte {
	n := len(s)
	out, j := openString(b, n)
	i := 0
	for i < n {
		if i+8 <= n {
			x := binary.LittleEndian.Uint64(s[i:])
			binary.LittleEndian.PutUint64(out[j:], x)
			m := careMask(x)
			if m == 0 {
				i += 8
				j += 8
				continue
			}
			k := bits.TrailingZeros64(m) >> 3
			i += k
			j += k
		}
		c := s[i]
		if c >= utf8.RuneSelf {
			i, j = copyMultibyte(out, s, i, j)
		} else if e := escapes[c]; e != 0 {
			binary.LittleEndian.PutUint64(out[j:], e) // the length byte lands past the escape
			i++
			j += int(e >> 56)
		} else { // one of the last 7 bytes, read one at a time
			out[j] = c
			i++
			j++
			continue
		}
		if len(out)-j < n-i+stringSlack {
			out = growString(out, j, n-i)
		}
	}
	return closeString(out, j)
}

// copyMultibyte copies the run of multi-byte characters that starts at s[i]
// to out[j:], up to the next ASCII byte or the end, and returns where it
// stopped in s and out. It stops early after writing U+FFFD for a byte that
// is not part of valid UTF-8 or the escape of U+2028 or U+2029, which are
// longer than what they replace (the caller checks the room).
//
// The characters of 2 and 3 bytes (accented Latin, Greek, Cyrillic, CJK...)
// are checked with one 4-byte load and mask and copied with one store;
// others, and those among the last 3 bytes, go by the leads table.
func copyMultibyte(out, s []byte, i, j int) (int, int) {
	n := len(s)
	for i < n {
		if i+4 <= n {
			w := binary.LittleEndian.Uint32(s[i:])
			c := byte(w)
			// 1110xxxx 10xxxxxx 10xxxxxx, not E0 or ED (whose second byte
			// has a narrower range) or E2 (which may start U+2028)
			if w&0xc0c0f0 == 0x8080e0 && c != 0xe0 && c != 0xed && c != 0xe2 {
				binary.LittleEndian.PutUint32(out[j:], w)
				i += 3
				j += 3
				continue
			}
			// 110xxxxx 10xxxxxx, not the overlong C0 and C1
			if w&0xc0e0 == 0x80c0 && c >= 0xc2 {
				binary.LittleEndian.PutUint32(out[j:], w)
				i += 2
				j += 2
				continue
			}
		}
		c := s[i]
		if c < utf8.RuneSelf {
			break
		}
		l := leads[c]
		size := int(l.n)
		if size == 0 || i+size > n || s[i+1] < l.lo || s[i+1] > l.hi ||
			size > 2 && s[i+2]&0xc0 != 0x80 || size > 3 && s[i+3]&0xc0 != 0x80 {
			out[j], out[j+1], out[j+2] = 0xef, 0xbf, 0xbd // U+FFFD
			return i + 1, j + 3
		}
		if c == 0xe2 && s[i+1] == 0x80 && s[i+2]&0xfe == 0xa8 {
			binary.LittleEndian.PutUint64(out[j:], lineSeparatorEscape(s[i+2]))
			return i + 3, j + 6
		}
		out[j] = c
		out[j+1] = s[i+1]
		if size > 2 {
			out[j+2] = s[i+2]
			if size > 3 {
				out[j+3] = s[i+3]
			}
		}
		i += size
		j += size
	}
	return i, j
}

// lineSeparatorEscape is the escape \u2028 or \u2029 as a little-endian
// word, for the last byte (0xA8 or 0xA9) of U+2028 or U+2029.
func lineSeparatorEscape(last byte) uint64 {
	return '\\' | 'u'<<8 | '2'<<16 | '0'<<24 | '2'<<32 | uint64('8'+last&1)<<40
}

// openString makes room in b for the JSON string of n bytes and writes its
// opening quote; it returns b extended to its capacity and where to write.
func openString(b []byte, n int) ([]byte, int) {
	j := len(b)
	out := slices.Grow(b, n+1+stringSlack)
	out = out[:cap(out)]
	out[j] = '"'
	return out, j + 1
}

// growString makes room for left bytes still to read after out[:j].
func growString(out []byte, j, left int) []byte {
	out = slices.Grow(out[:j], left+stringSlack+left/4)
	return out[:cap(out)]
}

// closeString writes the closing quote at out[j] and returns the output.
func closeString(out []byte, j int) []byte {
	out[j] = '"'
	return out[:j+1]
}
