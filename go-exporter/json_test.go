package main

import (
	"bytes"
	"encoding/json"
	"math"
	"math/big"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
)

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

// TestPlainFloatLikeStrconv checks appendPlainFloat (Dragonbox with its own
// digit layout, float.go) against strconv.AppendFloat(f, 'f', -1, 64), byte
// for byte, on random numbers of every kind in the plain range: scores and
// probabilities, any bits, integers (exact products), short decimals and
// their neighbours (ties and near-ties), float32 values widened, and the
// range's ends; and that it leaves the rest to strconv.
func TestPlainFloatLikeStrconv(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	fast := 0
	check := func(f float64) {
		if math.IsNaN(f) || math.IsInf(f, 0) || f == 0 {
			return
		}
		got, ok := appendPlainFloat([]byte("x"), f)
		abs := math.Abs(f)
		inRange := abs >= 1e-6 && abs < 1e21
		if !ok {
			if inRange && math.Float64bits(f)&(1<<52-1) != 0 && math.Float64bits(f)>>52&0x7ff != 0 {
				t.Fatalf("appendPlainFloat(%v) left a plain-range number to strconv", f)
			}
			if string(got) != "x" {
				t.Fatalf("appendPlainFloat(%v) appended %q and reported false", f, got)
			}
			return
		}
		fast++
		if want := strconv.AppendFloat([]byte("x"), f, 'f', -1, 64); !inRange || string(got) != string(want) {
			t.Fatalf("appendPlainFloat(%v) = %s, strconv %s", f, got, want)
		}
	}
	for _, f := range []float64{1e-6, math.Nextafter(1e-6, 0), math.Nextafter(1e-6, 1), 1e21, math.Nextafter(1e21, 0),
		1e20, 123456789012345678901, 0.1, 0.2, 0.3, 0.001, 100, 1234.5, 1, 3, 10, 1e-5, 9.999999e-6, 0.7, 1.0 / 3,
		9007199254740993, 4503599627370497, 1e15 + 0.3, 999999999999999999999.0} {
		check(f)
		check(-f)
	}
	for i := 0; i < 2_000_000; i++ {
		var f float64
		switch i % 7 {
		case 0:
			f = r.Float64() // a score or a probability
		case 1:
			f = math.Float64frombits(r.Uint64())
		case 2:
			f = r.Float64() * math.Pow(10, float64(r.IntN(28)-7)) // any magnitude of the range
		case 3:
			f = float64(r.Uint64N(1 << 53)) // integers: exact products
		case 4:
			f = float64(r.IntN(10_000_000)) / math.Pow(10, float64(r.IntN(14))) // short decimals
		case 5:
			f = math.Nextafter(float64(r.IntN(100_000))/math.Pow(10, float64(r.IntN(10))), math.Inf(2*r.IntN(2)-1))
		case 6:
			f = float64(float32(r.Float64() * math.Pow(10, float64(r.IntN(20)-6))))
		}
		check(f)
	}
	if fast < 1_500_000 {
		t.Fatalf("only %d numbers took the fast path", fast)
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

// TestPow10Tab recomputes float.go's powers of ten as internal/strconv's
// generator does: floor(10^k * 2^e) for the e that puts it in [2^127, 2^128).
func TestPow10Tab(t *testing.T) {
	top := new(big.Int).Lsh(big.NewInt(1), 128)
	for k := pow10Min; k <= pow10Max; k++ {
		num, den := big.NewInt(1), big.NewInt(1)
		p := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(max(k, -k))), nil)
		if k < 0 {
			den = p
		} else {
			num = p
		}
		for new(big.Int).Div(num, den).Cmp(top) >= 0 {
			den.Lsh(den, 1)
		}
		for new(big.Int).Lsh(num, 1).Cmp(new(big.Int).Mul(top, den)) < 0 {
			num.Lsh(num, 1)
		}
		m := new(big.Int).Div(num, den)
		want := uint128{new(big.Int).Rsh(m, 64).Uint64(), new(big.Int).And(m, new(big.Int).SetUint64(math.MaxUint64)).Uint64()}
		if got := pow10Tab[k-pow10Min]; got != want {
			t.Errorf("pow10Tab for 1e%d = %#x, want %#x", k, got, want)
		}
	}
}

// FuzzPlainFloat checks appendPlainFloat against strconv on any float64.
func FuzzPlainFloat(f *testing.F) {
	f.Add(math.Float64bits(0.7))
	f.Add(math.Float64bits(123456789012345678))
	f.Fuzz(func(t *testing.T, x uint64) {
		v := math.Float64frombits(x)
		if got, ok := appendPlainFloat(nil, v); ok && string(got) != strconv.FormatFloat(v, 'f', -1, 64) {
			t.Fatalf("appendPlainFloat(%v) = %s, strconv %s", v, got, strconv.FormatFloat(v, 'f', -1, 64))
		}
	})
}
