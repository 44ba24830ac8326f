package main

// The JSON string writer: most of the exporter's work. The bytes are copied
// 8 at a time, escaping as they go; text that is not all ASCII is checked
// to be valid UTF-8 with vector instructions first, and then needs only
// escapes, or else is checked a character at a time as it is copied.

import (
	"encoding/binary"
	"math/bits"
	"slices"
	"unicode/utf8"

	asmutf8 "github.com/segmentio/asm/utf8"
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
// byte less than n", without its "&^ x", which would leave out the bytes
// from 0x80: each of those has its high bit set by x - 0x20 or by q - 1.)
func careMask(x uint64) uint64 {
	q := x ^ ('"' * ones)
	bs := x ^ ('\\' * ones)
	return ((x - 0x20*ones) | (q - ones) | (bs - ones)) & highs
}

// ascii[c] is how the ASCII byte c is written inside a JSON string: itself,
// or for '"', '\\' and the control characters an escape (\n, \r, \t, \b,
// \f or \u00XX); up to 6 bytes, little-endian, with their number in the top
// byte, so that one load and one 8-byte store write any of them. Its 256
// entries (those from 0x80 unused) let any byte index it without a check.
var ascii = func() (t [256]uint64) {
	const hex = "0123456789abcdef"
	for c := range utf8.RuneSelf {
		e := []byte{byte(c)}
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
		case '"', '\\':
			e = []byte{'\\', byte(c)}
		default:
			if c < 0x20 {
				e = []byte{'\\', 'u', '0', '0', hex[c>>4], hex[c&0xf]}
			}
		}
		t[c] = binary.LittleEndian.Uint64(append(e, 0, 0, 0, 0, 0, 0, 0, 0)) | uint64(len(e))<<56
	}
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
// No call a byte, few branches: s is loaded and stored 8 bytes at a time,
// in a loop of its own without calls (12% faster on plain ASCII than one
// loop with the paths below, as the compiler lays it out). A word of plain
// ASCII needs nothing more. A word of ASCII with bytes to escape is written
// again by escapeWordAt, without a branch a byte (text dense with quotes
// would mispredict one every few bytes). At the first byte over 0x7F, the
// rest of s is checked at once (validRest); if it is valid UTF-8,
// appendValid writes it, which only has ASCII and U+2028 and U+2029 to
// escape. Otherwise each byte to care about is written by itself: ASCII and
// bytes that start no character by one load from the single table, leads of
// multi-byte characters by copyMultibyte; so are the last 7 bytes or fewer,
// all of them. (escapeWordAt for the ASCII words of such text measured
// slower: the branch that tells them from the others mispredicts.) The
// output keeps room for every byte still to read plus stringSlack, so the
// stores need no other check; only escapes, longer than what they replace,
// may have to grow it.
func appendString(b, s []byte) []byte {
	n := len(s)
	out, j := openString(b, n)
	i := 0
	tried := false
	for {
		// words of plain ASCII
		var x, m uint64
		for i+8 <= n {
			x = binary.LittleEndian.Uint64(s[i:])
			binary.LittleEndian.PutUint64(out[j:], x)
			if m = careMask(x); m != 0 {
				break
			}
			i += 8
			j += 8
		}
		tail := m == 0 // the last 7 bytes or fewer, if any, a byte at a time
		if tail {
			if i >= n {
				break
			}
		} else {
			if !tried {
				if x&highs == 0 { // 8 ASCII bytes, some to escape
					out, j = escapeWordAt(out, j, n-i, x)
					i += 8
					continue
				}
				tried = true
				if h := bits.TrailingZeros64(x&highs) >> 3; validRest(s[i+h:]) {
					return appendValid(out, s, i, j)
				}
			}
			k := bits.TrailingZeros64(m) >> 3
			i += k
			j += k
		}
		for {
			if e := single[s[i]]; e != 0 { // ASCII, or a byte that starts no character
				binary.LittleEndian.PutUint64(out[j:], e)
				i++
				j += int(e >> 56)
			} else {
				i, j = copyMultibyte(out, s, i, j)
			}
			out = keepRoom(out, j, n-i)
			// bytes to care about come in runs (an invalid sequence, "\r\n"):
			// the next is written here, not by going back to the words
			if i >= n || !tail && single[s[i]]>>56 == 1 {
				break
			}
		}
	}
	return closeString(out, j)
}

// single[c] is how the byte c is written when it is a character by
// itself: as the ascii table says for ASCII, as U+FFFD for a byte that
// starts no UTF-8 character; 0 for the bytes that may start one.
var single = func() (t [256]uint64) {
	for c := range 256 {
		t[c] = ascii[c]
		if c >= utf8.RuneSelf {
			t[c] = 0
			if leads[c].n == 0 {
				t[c] = 0xbdbfef | 3<<56
			}
		}
	}
	return t
}()

// validRest reports whether s, from the first byte over 0x7F that
// appendString meets, is valid UTF-8 to its end, checked with vector
// instructions where the CPU has them (AVX2), and long enough for that to
// pay (32 bytes). Text full of invalid bytes mostly gives up at once, on
// its first character.
func validRest(s []byte) bool {
	if len(s) < 32 {
		return false
	}
	if l := leads[s[0]]; l.n == 0 || s[1] < l.lo || s[1] > l.hi {
		return false
	}
	return asmutf8.Valid(s)
}

// appendValid is appendString from s[i] and out[j] on, where s[i:] is valid
// UTF-8: its words with validCareMask, which lets bytes over 0x7F through
// but 0xE2, and each byte to care about by writeValid.
func appendValid(out, s []byte, i, j int) []byte {
	n := len(s)
	for i+8 <= n {
		x := binary.LittleEndian.Uint64(s[i:])
		binary.LittleEndian.PutUint64(out[j:], x)
		m := validCareMask(x)
		if m == 0 {
			i += 8
			j += 8
			continue
		}
		if x&highs == 0 { // 8 ASCII bytes, some to escape
			out, j = escapeWordAt(out, j, n-i, x)
			i += 8
			continue
		}
		k := bits.TrailingZeros64(m) >> 3
		i += k
		j += k
		i, j = writeValid(out, s, i, j)
		out = keepRoom(out, j, n-i)
	}
	for i < n {
		i, j = writeValid(out, s, i, j)
		out = keepRoom(out, j, n-i)
	}
	return closeString(out, j)
}

// writeValid writes s[i] (of valid UTF-8) to out[j:]: ASCII by the ascii
// table, U+2028 and U+2029 escaped, other bytes as they are.
func writeValid(out, s []byte, i, j int) (int, int) {
	c := s[i]
	if c < utf8.RuneSelf {
		e := ascii[c]
		binary.LittleEndian.PutUint64(out[j:], e)
		return i + 1, j + int(e>>56)
	}
	if isLineSeparatorAt(s, i) {
		binary.LittleEndian.PutUint64(out[j:], lineSeparatorEscape(s[i+2]))
		return i + 3, j + 6
	}
	out[j] = c
	return i + 1, j + 1
}

// validCareMask is careMask for valid UTF-8: bytes from 0x80 need no care
// but 0xE2, which may start U+2028 or U+2029 ("&^ x" leaves them out).
func validCareMask(x uint64) uint64 {
	q := x ^ ('"' * ones)
	bs := x ^ ('\\' * ones)
	e2 := x ^ (0xe2 * ones)
	return (((x-0x20*ones)|(q-ones)|(bs-ones))&^x | (e2-ones)&^e2) & highs
}

// escapeWordAt writes the 8 ASCII bytes of x (little-endian) at out[j:],
// each as the ascii table says, without a branch a byte, making room first
// for what they may become (6 times as many) and the left bytes still to
// read (x included); it returns out and the end of what it wrote.
func escapeWordAt(out []byte, j, left int, x uint64) ([]byte, int) {
	if need := max(left+5*8, len(wordOut{})); len(out)-j < need+stringSlack {
		out = growString(out, j, need)
	}
	o := (*wordOut)(out[j:])
	d := put(o, 0, ascii[byte(x)])
	d = put(o, d, ascii[byte(x>>8)])
	d = put(o, d, ascii[byte(x>>16)])
	d = put(o, d, ascii[byte(x>>24)])
	d = put(o, d, ascii[byte(x>>32)])
	d = put(o, d, ascii[byte(x>>40)])
	d = put(o, d, ascii[byte(x>>48)])
	return out, j + put(o, d, ascii[byte(x>>56)])
}

// wordOut is where a word of 8 ASCII bytes is written when some need
// escapes: up to 6*8 bytes, and the last store's 8.
type wordOut [64 + 8]byte

// put stores e (text and length as in ascii) at o[d:] and returns the end of
// its text. d is at most 7*6 here; the mask lets the compiler see that the
// store fits, without a bounds check.
func put(o *wordOut, d int, e uint64) int {
	binary.LittleEndian.PutUint64(o[d&63:], e)
	return d + int(e>>56)
}

// copyMultibyte copies the run of multi-byte characters that starts at s[i]
// (a byte over 0x7F) to out[j:], up to the next ASCII byte or the end, and
// returns where it stopped in s and out. It stops early after writing
// U+FFFD for a byte that is not part of valid UTF-8 or the escape of U+2028
// or U+2029, which are longer than what they replace (the caller checks
// the room).
//
// The first character is checked by the leads table, as are those the
// loops below do not take: text that is not UTF-8 at all (Latin-1 read as
// UTF-8, say) has its bytes over 0x7F one by one, mostly invalid. After
// it, characters of 3 bytes (CJK, most punctuation) are checked two at a
// time with one 8-byte load and copied with one store, and those of 2
// bytes (accented Latin, Greek, Cyrillic...) four at a time.
func copyMultibyte(out, s []byte, i, j int) (int, int) {
	n := len(s)
	for {
		c := s[i]
		l := leads[c]
		size := int(l.n)
		if size == 0 || i+size > n || s[i+1] < l.lo || s[i+1] > l.hi ||
			size > 2 && s[i+2]&0xc0 != 0x80 || size > 3 && s[i+3]&0xc0 != 0x80 {
			out[j], out[j+1], out[j+2] = 0xef, 0xbf, 0xbd // U+FFFD
			return i + 1, j + 3
		}
		if isLineSeparatorAt(s, i) {
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
		// then runs of characters of 3 bytes two at a time, of 2 bytes
		// four at a time
		for i+8 <= n {
			x := binary.LittleEndian.Uint64(s[i:])
			// 1110xxxx 10xxxxxx 10xxxxxx twice
			if x&0x_c0c0f0_c0c0f0 == 0x_8080e0_8080e0 && plain3(uint32(x)) && plain3(uint32(x>>24)) {
				binary.LittleEndian.PutUint64(out[j:], x)
				i += 6
				j += 6
				continue
			}
			// 110xxxxx 10xxxxxx four times, none the overlong C0 or C1:
			// the lead's bits 1-4 are not all zero
			if x&0xc0e0_c0e0_c0e0_c0e0 == 0x80c0_80c0_80c0_80c0 &&
				(x&0x001e_001e_001e_001e+0x7fff_7fff_7fff_7fff)&0x8000_8000_8000_8000 == 0x8000_8000_8000_8000 {
				binary.LittleEndian.PutUint64(out[j:], x)
				i += 8
				j += 8
				continue
			}
			break
		}
		if i >= n || s[i] < utf8.RuneSelf {
			return i, j
		}
	}
}

// plain3 reports whether the 3-byte sequence in the low bytes of w (little
// endian), already of the form 1110xxxx 10xxxxxx 10xxxxxx, is valid UTF-8
// written as it is: not overlong (E0 80-9F), not a surrogate (ED A0-BF), not
// U+2028 or U+2029 (E2 80 A8-A9). Big-endian, the sequence orders like its
// code point, so each test is one comparison.
func plain3(w uint32) bool {
	v := bits.ReverseBytes32(w) >> 8 // lead<<16 | second<<8 | third
	return v>>13 != 0xe080>>5 && v>>13 != 0xeda0>>5 && v>>1 != 0xe280a8>>1
}

// isLineSeparatorAt reports whether s[i:] starts with U+2028 or U+2029 (E2
// 80 A8 or E2 80 A9), which are escaped; s[i] starts a valid character.
func isLineSeparatorAt(s []byte, i int) bool {
	return s[i] == 0xe2 && s[i+1] == 0x80 && s[i+2]&0xfe == 0xa8
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

// keepRoom keeps the writers' room after out[:j]: left bytes still to read
// plus stringSlack.
func keepRoom(out []byte, j, left int) []byte {
	if len(out)-j < left+stringSlack {
		out = growString(out, j, left)
	}
	return out
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
