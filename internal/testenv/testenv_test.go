package testenv

import "testing"

func TestInCI(t *testing.T) {
	for _, tc := range []struct {
		val  string
		want bool
	}{{"true", true}, {"", false}, {"false", false}, {"1", false}} {
		t.Setenv("CI", tc.val)
		if got := InCI(); got != tc.want {
			t.Errorf("CI=%q: InCI()=%v, want %v", tc.val, got, tc.want)
		}
	}
}
