package main

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
	"unicode/utf8"
)

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
		got := appendString(nil, s)
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.Encode(string(s))
		want := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
		// encoding/json writes U+FFFD escaped, appendString as it is
		want = bytes.ReplaceAll(want, []byte(`\ufffd`), []byte("\uFFFD"))
		if !bytes.Equal(got, want) {
			t.Fatalf("%q: got %s, encoding/json %s", s, got, want)
		}
	}
}

func TestAppendFloat(t *testing.T) {
	for _, c := range []struct {
		f    float64
		bits int
		want string
	}{
		{0, 64, "0"},
		{math.Copysign(0, -1), 64, "0"},
		{1, 64, "1"},
		{0.5, 64, "0.5"},
		{0.7, 64, "0.7"},
		{1.0 / 3, 64, "0.3333333333333333"},
		{1e-6, 64, "0.000001"},
		{1e-7, 64, "1e-7"},
		{1.5e-10, 64, "1.5e-10"},
		{5e-324, 64, "5e-324"},
		{1e21, 64, "1e+21"},
		{123456789, 64, "123456789"},
		{float64(float32(0.7)), 32, "0.7"},
		{float64(float32(1.0 / 3)), 32, "0.33333334"},
		{float64(float32(1e-7)), 32, "1e-7"},
		{float64(math.SmallestNonzeroFloat32), 32, "1e-45"},
	} {
		got := string(appendFloat(nil, c.f, c.bits))
		if got != c.want {
			t.Errorf("appendFloat(%v, %d) = %s, want %s", c.f, c.bits, got, c.want)
		}
	}
}

// TestAppendFloatRoundTrip checks on random numbers that the text is valid
// JSON, reads back as the same number, and matches encoding/json.
func TestAppendFloatRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 100000; i++ {
		var f float64
		switch i % 4 {
		case 0:
			f = r.Float64()
		case 1:
			f = math.Float64frombits(r.Uint64())
		case 2:
			f = r.Float64() * math.Pow(10, float64(r.IntN(40)-30))
		case 3:
			f = float64(float32(r.Float64()))
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			continue
		}
		got := appendFloat(nil, f, 64)
		if !json.Valid(got) {
			t.Fatalf("%v: %s is not valid JSON", f, got)
		}
		back, err := strconv.ParseFloat(string(got), 64)
		if err != nil || back != f && !(f == 0 && back == 0) {
			t.Fatalf("%v: %s reads back as %v, %v", f, got, back, err)
		}
		want, _ := json.Marshal(f)
		if f != 0 && !bytes.Equal(got, want) {
			t.Fatalf("%v: %s, encoding/json %s", f, got, want)
		}
		f32 := float32(f)
		if math.IsInf(float64(f32), 0) {
			continue
		}
		got = appendFloat(nil, float64(f32), 32)
		back, err = strconv.ParseFloat(string(got), 32)
		if !json.Valid(got) || err != nil || float32(back) != f32 {
			t.Fatalf("float32 %v: %s reads back as %v, %v", f32, got, back, err)
		}
	}
}

func TestAppendTime(t *testing.T) {
	for _, c := range []struct {
		t    time.Time
		want string
	}{
		{time.Date(2026, 1, 4, 2, 0, 0, 123456000, time.UTC), `"2026-01-04T02:00:00.123456Z"`},
		{time.Date(2026, 1, 4, 2, 0, 0, 0, time.UTC), `"2026-01-04T02:00:00Z"`},
		{time.Date(2026, 1, 4, 3, 0, 0, 500000000, time.FixedZone("x", 3600)), `"2026-01-04T02:00:00.5Z"`},
	} {
		if got := string(appendTime(nil, c.t)); got != c.want {
			t.Errorf("appendTime(%v) = %s, want %s", c.t, got, c.want)
		}
	}
}

func BenchmarkAppendString(b *testing.B) {
	s := []byte("A fairly ordinary sentence of review text, with \"quotes\" and émoji 🙂 in it.")
	var buf []byte
	b.SetBytes(int64(len(s)))
	for b.Loop() {
		buf = appendString(buf[:0], s)
	}
	_ = utf8.Valid(buf)
}

// FuzzAppendString checks appendString against encoding/json on any bytes.
func FuzzAppendString(f *testing.F) {
	f.Add([]byte("plain \"ascii\" \\ and 日本語 \u2028 \xff"))
	f.Fuzz(func(t *testing.T, s []byte) {
		got := appendString(nil, s)
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.Encode(string(s))
		want := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
		want = bytes.ReplaceAll(want, []byte(`\ufffd`), []byte("\uFFFD"))
		if !bytes.Equal(got, want) {
			t.Fatalf("%q: got %s, encoding/json %s", s, got, want)
		}
	})
}

func BenchmarkAppendStringMixed(b *testing.B) {
	s := []byte("Stocks rally as the market opens higher on strong quarterly profit reports from tech companies. 足球比赛冠军政府部长表示科学研究报告网络安全。")
	var buf []byte
	b.SetBytes(int64(len(s)))
	for b.Loop() {
		buf = appendString(buf[:0], s)
	}
}
