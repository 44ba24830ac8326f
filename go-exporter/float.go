package main

// Shortest decimals of float64 numbers in JSON's plain range, the same text
// as strconv.AppendFloat(b, f, 'f', -1, 64), 1.8 times as fast: scores
// and probabilities are the exporter's other big cost after strings, five
// numbers a row with all fields.
//
// The digits are found as strconv finds them, with Junekey Jeon's
// Dragonbox; the code below is the float64 part of Go's
// internal/strconv/ftoadbox.go (Go 1.26; Copyright 2025 The Go Authors,
// BSD-style licence: https://go.dev/LICENSE), reduced to numbers of
// 1e-6 <= |f| < 1e21 whose significand is not a power of two. What costs
// in strconv is around it: a general digit writer and a layout that writes
// the fraction a digit at a time. Here the digits are written two at a
// time and laid out with copies. Other numbers go to strconv.

import (
	"encoding/binary"
	"math"
	"math/bits"
	"slices"
)

type uint128 struct{ hi, lo uint64 }

// The powers of ten Dragonbox needs for the plain range: 10^k for k in
// [pow10Min, pow10Max], as 128-bit mantissas with the high bit set,
// rounded down: the lines of internal/strconv's pow10Tab for those k
// (TestPow10Tab recomputes them with math/big).
const (
	pow10Min = -8
	pow10Max = 25
)

var pow10Tab = [pow10Max - pow10Min + 1]uint128{
	{0xabcc77118461cefc, 0xfdc20d2b36ba7c3d}, // 1e-8
	{0xd6bf94d5e57a42bc, 0x3d32907604691b4c}, // 1e-7
	{0x8637bd05af6c69b5, 0xa63f9a49c2c1b10f}, // 1e-6
	{0xa7c5ac471b478423, 0x0fcf80dc33721d53}, // 1e-5
	{0xd1b71758e219652b, 0xd3c36113404ea4a8}, // 1e-4
	{0x83126e978d4fdf3b, 0x645a1cac083126e9}, // 1e-3
	{0xa3d70a3d70a3d70a, 0x3d70a3d70a3d70a3}, // 1e-2
	{0xcccccccccccccccc, 0xcccccccccccccccc}, // 1e-1
	{0x8000000000000000, 0x0000000000000000}, // 1e0
	{0xa000000000000000, 0x0000000000000000}, // 1e1
	{0xc800000000000000, 0x0000000000000000}, // 1e2
	{0xfa00000000000000, 0x0000000000000000}, // 1e3
	{0x9c40000000000000, 0x0000000000000000}, // 1e4
	{0xc350000000000000, 0x0000000000000000}, // 1e5
	{0xf424000000000000, 0x0000000000000000}, // 1e6
	{0x9896800000000000, 0x0000000000000000}, // 1e7
	{0xbebc200000000000, 0x0000000000000000}, // 1e8
	{0xee6b280000000000, 0x0000000000000000}, // 1e9
	{0x9502f90000000000, 0x0000000000000000}, // 1e10
	{0xba43b74000000000, 0x0000000000000000}, // 1e11
	{0xe8d4a51000000000, 0x0000000000000000}, // 1e12
	{0x9184e72a00000000, 0x0000000000000000}, // 1e13
	{0xb5e620f480000000, 0x0000000000000000}, // 1e14
	{0xe35fa931a0000000, 0x0000000000000000}, // 1e15
	{0x8e1bc9bf04000000, 0x0000000000000000}, // 1e16
	{0xb1a2bc2ec5000000, 0x0000000000000000}, // 1e17
	{0xde0b6b3a76400000, 0x0000000000000000}, // 1e18
	{0x8ac7230489e80000, 0x0000000000000000}, // 1e19
	{0xad78ebc5ac620000, 0x0000000000000000}, // 1e20
	{0xd8d726b7177a8000, 0x0000000000000000}, // 1e21
	{0x878678326eac9000, 0x0000000000000000}, // 1e22
	{0xa968163f0a57b400, 0x0000000000000000}, // 1e23
	{0xd3c21bcecceda100, 0x0000000000000000}, // 1e24
	{0x84595161401484a0, 0x0000000000000000}, // 1e25
}

// appendPlainFloat appends f (finite, not 0) as strconv.AppendFloat(b, f,
// 'f', -1, 64) does, and reports false, appending nothing, for the numbers
// it leaves to strconv.
func appendPlainFloat(b []byte, f float64) ([]byte, bool) {
	x := math.Float64bits(f)
	biased := int(x>>52) & 0x7ff
	frac := x & (1<<52 - 1)
	if frac == 0 || biased == 0 || biased == 0x7ff {
		return b, false // a power of two (Dragonbox's other case), subnormal, Inf or NaN
	}
	if abs := math.Abs(f); abs < 1e-6 || abs >= 1e21 {
		return b, false
	}
	mant := frac | 1<<52
	exp := biased - 1023 - 52

	// Dragonbox, Algorithm 5.2 (page 15), with κ = 2 for float64: as
	// internal/strconv's dboxFtoa64
	const (
		κ     = 2
		p10κ  = 100
		p10κ1 = p10κ * 10
	)
	k0 := -mulLog10_2(exp)
	φ, β := dboxPow64(κ+k0, exp)
	zi, exact := dboxMulPow64((mant*2+1)<<β, φ)
	s, r := zi/p10κ1, uint32(zi%p10κ1)
	δi := uint32(φ.hi >> (64 - 1 - β))
	digits, point := uint64(0), 0 // the value is digits * 10^point
	switch {
	case r < δi && (r != 0 || !exact || mant%2 == 0):
		digits, point = trimZeros(s)
		point += -k0 + 1
	case r == δi && func() bool { parity, exact := dboxParity64(mant*2-1, φ, β); return parity || exact && mant%2 == 0 }():
		digits, point = trimZeros(s)
		point += -k0 + 1
	default:
		if r < δi {
			s--
			r = p10κ * 10
		}
		// Algorithm 5.4 (page 18)
		D := r + p10κ/2 - δi/2
		t, ρ := D/p10κ, D%p10κ
		yru := 10*s + uint64(t)
		if ρ == 0 {
			parity, exact := dboxParity64(mant*2, φ, β)
			if parity != ((D-p10κ/2)%2 != 0) || exact && yru%2 != 0 {
				yru--
			}
		}
		digits, point = yru, -k0
	}
	if f < 0 {
		b = append(b, '-')
	}
	return layoutPlain(b, digits, point), true
}

// layoutPlain appends digits * 10^point (digits > 0) in plain notation,
// with every digit of digits (as strconv's 'f' with the shortest
// precision): the digits are written two at a time, 8 at a time in
// independent parts, and placed with 8-byte copies, not calls.
func layoutPlain(b []byte, digits uint64, point int) []byte {
	var d [48]byte // the digits from d[0], and room for 24-byte copies from any of them
	nd := decimalLen(digits)
	i := nd
	for digits >= 1e8 {
		q := digits / 1e8
		i -= 8
		write8(d[i:], uint32(digits-q*1e8))
		digits = q
	}
	for digits >= 100 {
		q := digits / 100
		r := (digits - q*100) * 2
		i -= 2
		d[i], d[i+1] = twoDigits[r], twoDigits[r+1]
		digits = q
	}
	if digits >= 10 {
		d[0], d[1] = twoDigits[digits*2], twoDigits[digits*2+1]
	} else {
		d[0] = byte('0' + digits)
	}
	n := len(b)
	b = slices.Grow(b, 48)
	out := b[n : n+48]
	var j int
	switch dp := nd + point; {
	case dp <= 0: // 0.000ddd: dp >= -5 in the plain range
		copy24(out, zeroPoint)
		j = 2 - dp
		copy24(out[j:], d[:])
		j += nd
	case point >= 0: // ddd000: point <= 20
		copy24(out, d[:])
		copy24(out[nd:], zeroPoint[2:])
		j = nd + point
	default: // dd.ddd
		copy24(out, d[:])
		out[dp] = '.'
		copy24(out[dp+1:], d[dp:])
		j = nd + 1
	}
	return b[:n+j]
}

var zeroPoint = []byte("0.000000000000000000000000")

// write8 writes v < 1e8 as exactly 8 digits to d.
func write8(d []byte, v uint32) {
	hi, lo := v/10000, v%10000
	a, b, c, e := hi/100*2, hi%100*2, lo/100*2, lo%100*2
	_ = d[7]
	d[0], d[1] = twoDigits[a], twoDigits[a+1]
	d[2], d[3] = twoDigits[b], twoDigits[b+1]
	d[4], d[5] = twoDigits[c], twoDigits[c+1]
	d[6], d[7] = twoDigits[e], twoDigits[e+1]
}

// copy24 copies the first 24 bytes of src to dst, 8 at a time.
func copy24(dst, src []byte) {
	_, _ = dst[23], src[23]
	binary.LittleEndian.PutUint64(dst, binary.LittleEndian.Uint64(src))
	binary.LittleEndian.PutUint64(dst[8:], binary.LittleEndian.Uint64(src[8:]))
	binary.LittleEndian.PutUint64(dst[16:], binary.LittleEndian.Uint64(src[16:]))
}

// decimalLen returns the number of decimal digits of x > 0.
func decimalLen(x uint64) int {
	n := bits.Len64(x) * 1233 >> 12 // about log10(x), or one less
	if x >= pow10u64[n] {
		n++
	}
	return n
}

var pow10u64 = [20]uint64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19}

const twoDigits = "00010203040506070809101112131415161718192021222324252627282930313233343536373839" +
	"404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899"

// The helpers below are internal/strconv's, for float64.

// mulLog10_2 returns ⌊x·log10(2)⌋ for x in [-1600, 1600].
func mulLog10_2(x int) int { return (x * 78913) >> 18 }

// mulLog2_10 returns ⌊x·log2(10)⌋ for x in [-500, 500].
func mulLog2_10(x int) int { return (x * 108853) >> 15 }

// dboxPow64 gets the precomputed value of φ̃k for float64.
func dboxPow64(k, e int) (φ uint128, β int) {
	φ, e1 := pow10Tab[k-pow10Min], 1+mulLog2_10(k)
	if k < 0 || k > 55 {
		φ.lo++
	}
	return φ, e + e1 - 1
}

// dboxMulPow64 computes x^(i), y^(i), z^(i) from φ̃k and also checks
// whether x^(f), y^(f), z^(f) == 0 (section 5.2.1).
func dboxMulPow64(u uint64, φ uint128) (intPart uint64, isInt bool) {
	hi, lo := bits.Mul64(u, φ.hi)
	t, _ := bits.Mul64(u, φ.lo)
	lo, carry := bits.Add64(lo, t, 0)
	return hi + carry, lo == 0
}

// dboxParity64 computes only the parity of x^(i), y^(i), z^(i) from φ̃k and
// also checks whether x^(f), y^(f), z^(f) == 0 (section 5.2.1).
func dboxParity64(mant2 uint64, φ uint128, β int) (parity bool, isInt bool) {
	midHi, lo := bits.Mul64(mant2, φ.lo)
	hi := mant2*φ.hi + midHi
	parity = (hi>>(64-β))&1 != 0
	isInt = hi<<β|lo>>(64-β) == 0
	return
}

// trimZeros returns x without its trailing zeros and how many there were.
func trimZeros(x uint64) (uint64, int) {
	p := 0
	for x != 0 && x%10 == 0 {
		x /= 10
		p++
	}
	return x, p
}
