package main

// The fields of a PredictionResult that -fields can ask for.

import (
	"fmt"
	"strings"
)

// Field names, in the order of the contract.
const (
	fText = iota
	fLabel
	fScore
	fID
	fModelVersion
	fScoredAt
	fPartition
	fProbs
)

var expectedType = map[int]string{
	fText:         "strings",
	fLabel:        "strings",
	fID:           "strings",
	fScore:        "float32 or float64",
	fScoredAt:     "timestamps",
	fProbs:        "lists of float32 or float64",
	fModelVersion: "strings",
}

var fieldNames = []string{"text", "label", "score", "id", "model_version", "scored_at", "partition", "probs"}

func parseFields(s string) ([]int, error) {
	var fields []int
	seen := map[int]bool{}
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		k := -1
		for i, n := range fieldNames {
			if n == name {
				k = i
			}
		}
		if k < 0 {
			return nil, &usageError{fmt.Sprintf("-fields: unknown field %q, expected some of %s", name, strings.Join(fieldNames, ","))}
		}
		if seen[k] {
			return nil, &usageError{fmt.Sprintf("-fields: field %q given twice", name)}
		}
		seen[k] = true
		fields = append(fields, k)
	}
	return fields, nil
}
