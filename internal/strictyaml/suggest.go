package strictyaml

import (
	"fmt"
	"strings"
)

// suggestion is the " (did you mean ...?)" tail of an unknown-key problem:
// the known key closest to name, when one is close enough to be a typo,
// else the list of known keys (when there are any).
func suggestion(name string, known []string) string {
	if best, ok := closest(name, known); ok {
		return fmt.Sprintf("; did you mean %q?", best)
	}
	if len(known) == 0 {
		return ""
	}
	return fmt.Sprintf(" (known keys here: %s)", strings.Join(known, ", "))
}

// closest returns the known key nearest to name by edit distance (with
// adjacent transpositions, ignoring case, '_' and '-'), if it is within
// what a typo explains: 1 edit for keys of 3 to 5 characters, 2 for longer
// ones; short keys must match exactly but for case and separators.
func closest(name string, known []string) (string, bool) {
	n := fold(name)
	best, bestD := "", -1
	for _, k := range known {
		fk := fold(k)
		d := distance(n, fk)
		limit := 0
		switch l := len([]rune(fk)); {
		case l >= 6:
			limit = 2
		case l >= 3:
			limit = 1
		}
		if d <= limit && (bestD < 0 || d < bestD) {
			best, bestD = k, d
		}
	}
	return best, bestD >= 0
}

func fold(s string) string {
	return strings.NewReplacer("_", "", "-", "").Replace(strings.ToLower(s))
}

// distance is the optimal string alignment distance: insertions,
// deletions, substitutions and swaps of neighbours each cost 1.
func distance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}
