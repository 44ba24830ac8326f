package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math/bits"
	"math/rand/v2"
	"strings"
	"testing"
)

// jsonString is what encoding/json writes for s without HTML escaping, with
// U+FFFD written as it is (where encoding/json writes \ufffd), as
// appendString does.
func jsonString(s []byte) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.Encode(string(s))
	want := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	return bytes.ReplaceAll(want, []byte(`\ufffd`), []byte("\uFFFD"))
}

// checkLikeEncodingJSON checks that appendString(b, s) leaves b's bytes and
// appends jsonString(s).
func checkLikeEncodingJSON(t *testing.T, b, s []byte) {
	t.Helper()
	prefix := string(b)
	got := appendString(b, s)
	want := jsonString(s)
	if string(got[:len(prefix)]) != prefix || !bytes.Equal(got[len(prefix):], want) {
		t.Fatalf("%q after %d bytes: got %s, encoding/json %s", s, len(prefix), got[len(prefix):], want)
	}
}

func TestAppendString(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", `""`},
		{"plain", `"plain"`},
		{`"quoted" \ back`, `"\"quoted\" \\ back"`},
		{"<a href='x'>&</a>", `"<a href='x'>&</a>"`},
		{"\n\r\t\b\f", `"\n\r\t\b\f"`},
		{"\x00\x01\x1f\x7f", `"\u0000\u0001\u001f` + "\x7f" + `"`},
		{"\u2028\u2029", `"\u2028\u2029"`},
		{"é日本🙂", `"é日本🙂"`},
		{"a\xffb", "\"a\uFFFDb\""},
		{"\xe2\x82", "\"\uFFFD\uFFFD\""},
		{"\xed\xa0\x80", "\"\uFFFD\uFFFD\uFFFD\""}, // a surrogate is not valid UTF-8
		{"\xf4\x90\x80\x80", "\"\uFFFD\uFFFD\uFFFD\uFFFD\""},
		{"end\xc3", "\"end\uFFFD\""},
	} {
		if got := string(appendString(nil, []byte(c.in))); got != c.want {
			t.Errorf("appendString(%q) = %s, want %s", c.in, got, c.want)
		}
	}
}

// TestAppendStringLikeEncodingJSON compares with encoding/json (without HTML
// escaping) on random strings: the same text and the same value back.
func TestAppendStringLikeEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"a", "\"", "\\", "\n", "\x00", "\x1f", "\x7f", "\xff", "\xe2\x80", "\u2028", "\u2029", "é", "🙂", "<", "&", "\t", "\b", "\f",
		"\xe2\x80\xa7", "\xe2\x80\xaa", "\xed\x9f\xbf", "\xed\xa0\x80", "\xe0\x9f\xbf", "\xf0\x8f\xbf\xbf", "\xf4\x8f\xbf\xbf", "\xf4\x90\x80\x80", "\xc1\xbf", "\xc2\x80", "\uFFFD", "\U0010FFFF"}
	for i := 0; i < 20000; i++ {
		var s []byte
		// long runs of plain ASCII and of CJK too, as the encoder skips
		// those 8 bytes at a time
		for n := r.IntN(40); n > 0; n-- {
			switch k := r.IntN(len(alphabet) + 3); k {
			case len(alphabet):
				s = append(s, "plain ascii text"[:r.IntN(17)]...)
			case len(alphabet) + 1:
				s = append(s, "足球比赛冠军"[:r.IntN(19)]...) // may cut a rune
			case len(alphabet) + 2:
				s = append(s, byte(r.IntN(256))) // any byte
			default:
				s = append(s, alphabet[k]...)
			}
		}
		checkLikeEncodingJSON(t, nil, s)
	}
}

// TestAppendStringEveryPosition puts each byte that needs care (and each
// kind of multi-byte character, valid or cut, and those at the edges of the
// ranges the word-at-a-time checks test) at every position of plain ASCII,
// CJK and accented Latin strings of 0 to 40 bytes, so that it falls in every lane of
// an 8-byte word and in the byte-at-a-time tail, after output buffers of
// every spare capacity: the writer's stores past its output and its growing
// must give the same bytes as encoding/json.
func TestAppendStringEveryPosition(t *testing.T) {
	specials := []string{"\"", "\\", "\n", "\x00", "\x1f", "\x7f", "\xff", "\x80", "\xc3", "\xe2\x80", "\u2028", "\u2029",
		"é", "日", "🙂", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe0\x9f\xbf", "\xf0\x8f\xbf\xbf", "\U0010FFFF", "\uFFFD",
		"\x01\x02\x03\x04\x05\x06\x07\x08", "\"\"\"\"\"\"\"\"\"", "\u2028\u2028\u2028",
		"\xc0\x80", "\xc1\xbf", "\u201c", "\ud7ff", "\ue000", "\u0800", "\u07ff"}
	// plain ASCII, CJK (3-byte characters, checked two at a time) and
	// accented Latin (2-byte characters, checked four at a time)
	fills := []string{strings.Repeat("abcdefgh", 5), strings.Repeat("日本語", 5), strings.Repeat("éñüö", 5)}
	for _, fill := range fills {
		for n := 0; n <= 40; n++ {
			for pos := 0; pos <= n; pos++ {
				for _, sp := range specials {
					s := []byte(fill[:pos] + sp + fill[pos:n])
					for _, spare := range []int{0, 1, 7} {
						b := make([]byte, 3, 3+spare)
						copy(b, "x,y")
						checkLikeEncodingJSON(t, b, s)
					}
				}
			}
		}
	}
	// all escapes: the output grows to 6 times the input
	all := make([]byte, 0, 4096)
	for i := range 4096 {
		all = append(all, byte(i%0x20))
	}
	checkLikeEncodingJSON(t, nil, all)
	// the same after an invalid byte, and after a valid character and an
	// invalid byte later (the writer of text that is not UTF-8)
	checkLikeEncodingJSON(t, nil, append([]byte("\xff"), all...))
	checkLikeEncodingJSON(t, nil, append([]byte("\u00e9"+strings.Repeat("x", 40)+"\xff"), all...))
	checkLikeEncodingJSON(t, nil, bytes.Repeat([]byte("\xff"), 3000))
	checkLikeEncodingJSON(t, nil, bytes.Repeat([]byte("\u2029"), 3000))
}

// FuzzAppendString checks appendString against encoding/json on any bytes,
// appended to a buffer of any spare capacity.
func FuzzAppendString(f *testing.F) {
	f.Add([]byte("plain \"ascii\" \\ and 日本語 \u2028 \xff"), uint8(0))
	f.Add([]byte("\x00\x01 quite a long run of plain ascii then \xe2\x80\xa9"), uint8(5))
	f.Fuzz(func(t *testing.T, s []byte, spare uint8) {
		checkLikeEncodingJSON(t, make([]byte, 2, 2+int(spare)), s)
	})
}

// stringMixes are texts like those of benchmarks/bench_export.py's mixes.
var stringMixes = map[string]string{
	"ascii":   "Stocks rally as the market opens higher on strong quarterly profit reports from tech companies and officials said.",
	"cjk":     "市场公司股价上涨下跌足球比赛冠军 season 政府部长表示科学研究报告，网络安全2024的一是在不了有和人这中大为上个国。",
	"quotes":  `Officials said "the market" rose\ after &quot;talks&quot; on <b>Tuesday</b>, über "new" coach's 新闻 "final" report\ said.`,
	"control": "Stocks\n rally\t as the \xffmarket\x01 opens\r\n higher \xe6\x96 on strong\x00 profit 新闻reports\x1f from tech.",
	"mixed":   "A fairly ordinary sentence of review text, with \"quotes\" and émoji 🙂 in it.",
}

func BenchmarkAppendString(b *testing.B) {
	long := strings.Repeat(stringMixes["quotes"]+stringMixes["cjk"]+"\n", 40) // ~8 KB
	for _, name := range []string{"ascii", "cjk", "quotes", "control", "mixed", "long"} {
		s := []byte(stringMixes[name])
		if name == "long" {
			s = []byte(long)
		}
		b.Run(name, func(b *testing.B) {
			buf := make([]byte, 0, 64<<10)
			b.SetBytes(int64(len(s)))
			for b.Loop() {
				buf = appendString(buf[:0], s)
			}
		})
	}
}

// TestValidRest checks the gate to the writer of valid UTF-8: a string that
// starts with U+FFFD itself (text repaired before) is valid, as are 2- to
// 4-byte first characters; a first byte that starts no character, or a
// second byte out of its lead's range, is refused at once, and a later
// invalid byte by the vector check.
func TestValidRest(t *testing.T) {
	tail := strings.Repeat("plain text ", 4)
	for _, c := range []struct {
		s    string
		want bool
	}{
		{"\uFFFD" + tail, true},
		{"\u00e9" + tail, true},
		{"日本" + tail, true},
		{"🙂" + tail, true},
		{"\xff" + tail, false},
		{"\x80" + tail, false},
		{"\xc3" + tail, false},
		{"\xed\xa0\x80" + tail, false},
		{"\xf4\x90\x80\x80" + tail, false},
		{"\xe6\x96" + tail, false},
		{"日本" + tail + "\xff", false},
		{"日本", false}, // too short to pay
	} {
		if got := validRest([]byte(c.s)); got != c.want {
			t.Errorf("validRest(%q) = %v, want %v", c.s, got, c.want)
		}
	}
}

// TestCareMasks checks the word-at-a-time masks against their definition:
// the lowest byte they mark is the first byte of the word that needs care
// (for careMask: below 0x20, '"', '\\' or from 0x80; for validCareMask:
// the same but from 0x80 only 0xE2), on random words that mix those bytes
// with plain ones, and every byte value alone at every position.
func TestCareMasks(t *testing.T) {
	care := func(c byte) bool { return c < 0x20 || c == '"' || c == '\\' || c >= 0x80 }
	validCare := func(c byte) bool { return c < 0x20 || c == '"' || c == '\\' || c == 0xe2 }
	check := func(w [8]byte) {
		x := binary.LittleEndian.Uint64(w[:])
		for _, c := range []struct {
			name string
			mask func(uint64) uint64
			care func(byte) bool
		}{{"careMask", careMask, care}, {"validCareMask", validCareMask, validCare}} {
			want := -1
			for k, b := range w {
				if c.care(b) {
					want = k
					break
				}
			}
			got := -1
			if m := c.mask(x); m != 0 {
				got = bits.TrailingZeros64(m) >> 3
			}
			if got != want {
				t.Fatalf("%s(% x): first byte to care about at %d, want %d", c.name, w, got, want)
			}
		}
	}
	r := rand.New(rand.NewPCG(3, 4))
	picks := []byte{'a', ' ', '~', 0x7f, 0x00, 0x1f, 0x20, '"', '\\', '!', '#', '[', ']', 0x80, 0xe2, 0xe1, 0xe3, 0xa2, 0xdc, 0xff, 0x21, 0x5b}
	for range 200000 {
		var w [8]byte
		for k := range w {
			w[k] = picks[r.IntN(len(picks))]
			if r.IntN(4) == 0 {
				w[k] = byte(r.IntN(256))
			}
		}
		check(w)
	}
	for c := range 256 {
		for k := range 8 {
			w := [8]byte{'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'}
			w[k] = byte(c)
			check(w)
		}
	}
}
