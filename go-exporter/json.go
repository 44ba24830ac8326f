package main

// JSON numbers and times (strings are in jsonstring.go).

import (
	"math"
	"strconv"
	"time"
)

// appendFloat appends f as a JSON number: the shortest text that reads back
// as the same float32 (bits 32) or float64 (bits 64), written like
// JavaScript and encoding/json do (plain decimals, and exponent form such as
// 1e-7 below 1e-6 or from 1e21). f must be finite. -0 is written as 0.
func appendFloat(b []byte, f float64, bits int) []byte {
	if f == 0 {
		return append(b, '0')
	}
	if bits == 64 {
		if out, ok := appendPlainFloat(b, f); ok {
			return out
		}
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs < 1e-6 || abs >= 1e21 {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, bits)
	if format == 'e' {
		// clean up e-09 to e-9
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// timeLayout writes RFC 3339 in UTC with a "Z" and the fraction of a second
// without trailing zeros (none at all for whole seconds).
const timeLayout = "2006-01-02T15:04:05.999999999Z07:00"

// appendTime appends t (in UTC) as a JSON string in timeLayout.
func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, timeLayout)
	return append(b, '"')
}
