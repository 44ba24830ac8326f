package main

// The plan of one input: which column or metadata value gives each field.

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
)

// plan says how to write the rows of one input: for each field its key, its
// column (or -1) and, for fields that come from metadata, its value.
type plan struct {
	schema  *arrow.Schema
	fields  []int
	keys    [][]byte // `{"name":` for the first field, `,"name":` after
	cols    []int
	consts  []constEncoder
	classes []string
	ckeys   [][]byte // `"class":`
	anchor  int      // column that gives the row count
	prefix  string   // before each object
	suffix  string   // after each object
}

// isDate reports whether s is a date YYYY-MM-DD.
func isDate(s string) bool {
	if len(s) != 10 {
		return false
	}
	_, err := time.Parse("2006-01-02", s)
	return err == nil
}

func newPlan(schema *arrow.Schema, path string, cfg config) (*plan, error) {
	p := &plan{schema: schema, fields: cfg.fields, anchor: -1, prefix: "", suffix: "\n"}
	if cfg.json {
		p.prefix, p.suffix = ",\n", ""
	}
	md := schema.Metadata()
	meta := func(k string) (string, bool) {
		i := md.FindKey(k)
		if i < 0 {
			return "", false
		}
		return md.Values()[i], true
	}
	if v, ok := meta("pipeline.schema_version"); ok && v != "1" {
		return nil, fmt.Errorf("schema metadata pipeline.schema_version is %q, expected \"1\"", v)
	}
	for i, f := range cfg.fields {
		name := fieldNames[f]
		key := []byte{','}
		if i == 0 {
			key[0] = '{'
		}
		key = appendString(key, []byte(name))
		key = append(key, ':')
		p.keys = append(p.keys, key)
		col := -1
		if idx := schema.FieldIndices(name); len(idx) > 0 {
			col = idx[0]
		}
		var c constEncoder
		switch f {
		case fPartition:
			col = -1
			v, ok := meta("pipeline.partition")
			if ok {
				if !isDate(v) {
					return nil, fmt.Errorf("schema metadata pipeline.partition is %q, expected a date YYYY-MM-DD", v)
				}
			} else if v, ok = partitionFromPath(path); !ok {
				return nil, errors.New(`field "partition": no schema metadata pipeline.partition and no date=YYYY-MM-DD folder in the path`)
			}
			c = appendString(nil, []byte(v))
		case fModelVersion:
			if col < 0 {
				v, ok := meta("pipeline.model_version")
				if !ok || v == "" {
					return nil, errors.New(`column "model_version": missing, and no schema metadata pipeline.model_version either`)
				}
				c = appendString(nil, []byte(v))
			}
		case fProbs:
			v, ok := meta("pipeline.classes")
			if !ok {
				return nil, errors.New(`field "probs": no schema metadata pipeline.classes, expected a JSON array of the class names`)
			}
			var classes []string
			if err := json.Unmarshal([]byte(v), &classes); err != nil || len(classes) == 0 {
				return nil, fmt.Errorf("schema metadata pipeline.classes is %q, expected a non-empty JSON array of strings", truncate(v, 80))
			}
			seen := map[string]bool{}
			for _, c := range classes {
				if seen[c] {
					return nil, fmt.Errorf("schema metadata pipeline.classes names %q twice, expected distinct class names", c)
				}
				seen[c] = true
				p.ckeys = append(p.ckeys, append(appendString(nil, []byte(c)), ':'))
			}
			p.classes = classes
			if col < 0 {
				return nil, fmt.Errorf(`column "probs": missing, expected a column of %s`, expectedType[f])
			}
		default:
			if col < 0 {
				return nil, fmt.Errorf("column %q: missing, expected a column of %s", name, expectedType[f])
			}
		}
		p.cols = append(p.cols, col)
		p.consts = append(p.consts, c)
		if col >= 0 && p.anchor < 0 {
			p.anchor = col
		}
	}
	if p.anchor < 0 {
		// Only metadata fields: the text column still gives the row count.
		idx := schema.FieldIndices("text")
		if len(idx) == 0 {
			return nil, errors.New(`column "text": missing (it gives the number of rows)`)
		}
		p.anchor = idx[0]
	}
	return p, nil
}

// partitionFromPath finds the last date=YYYY-MM-DD component of path.
func partitionFromPath(path string) (string, bool) {
	parts := strings.Split(filepath.ToSlash(filepath.Clean(path)), "/")
	for i := len(parts) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(parts[i], "date="); ok && isDate(v) {
			return v, true
		}
	}
	return "", false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
