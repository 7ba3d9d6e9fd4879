package rules

import (
	"slices"
	"testing"
)

func TestFamiliesFor(t *testing.T) {
	tests := []struct {
		name  string
		addrs []string
		want  []Family
	}{
		{"none", nil, []Family{IPv4}},
		{"v4", []string{"10.0.0.5"}, []Family{IPv4}},
		{"v6 only", []string{"fd00::5"}, []Family{IPv4, IPv6}},
		{"dual", []string{"10.0.0.5", "fd00::5"}, []Family{IPv4, IPv6}},
		{"dual, v6 first", []string{"fd00::5", "10.0.0.5"}, []Family{IPv4, IPv6}},
		{"v4-mapped v6 is v4", []string{"::ffff:10.0.0.5"}, []Family{IPv4}},
		{"garbage ignored", []string{"nonsense", "10.0.0.5"}, []Family{IPv4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FamiliesFor(tt.addrs); !slices.Equal(got, tt.want) {
				t.Errorf("FamiliesFor(%q) = %v, want %v", tt.addrs, got, tt.want)
			}
		})
	}
}

func TestParseFamily(t *testing.T) {
	for _, f := range []Family{IPv4, IPv6} {
		if got, err := ParseFamily(f.String()); err != nil || got != f {
			t.Errorf("ParseFamily(%q) = %v, %v", f, got, err)
		}
	}
	if _, err := ParseFamily("ipx"); err == nil {
		t.Error("ParseFamily(ipx) accepted")
	}
}
