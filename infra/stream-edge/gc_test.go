package main

import "testing"

func TestGCSettings(t *testing.T) {
	cases := []struct {
		name             string
		gogc, gomemlimit string
		memoryMax        string
		percent          int
		limit            int64
	}{
		{"no container", "", "", "", gcPercent, -1},
		{"unlimited container", "", "", "max\n", gcPercent, -1},
		{"container limit", "", "", "268435456\n", gcPercent, 214748364},
		{"unreadable limit", "", "", "lots\n", gcPercent, -1},
		{"GOGC set", "100", "", "268435456\n", -1, 214748364},
		{"GOMEMLIMIT set", "", "100MiB", "268435456\n", gcPercent, -1},
	}
	for _, c := range cases {
		percent, limit := gcSettings(c.gogc, c.gomemlimit, []byte(c.memoryMax))
		if percent != c.percent || limit != c.limit {
			t.Errorf("%s: got (%d, %d), want (%d, %d)", c.name, percent, limit, c.percent, c.limit)
		}
	}
}
