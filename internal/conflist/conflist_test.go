package conflist

import (
	"bytes"
	"strings"
	"testing"
)

func TestUpsertRemoveInverse(t *testing.T) {
	entry := map[string]any{"type": "sidelane-cni", "log_level": "info"}
	cases := []struct {
		name, doc string
		want      string // after Upsert
	}{
		{
			name: "one line",
			doc:  `{"name":"n","plugins":[{"type":"a"},{"type":"b"}]}`,
			want: `{"name":"n","plugins":[{"type":"a"},{"type":"b"},{"type":"sidelane-cni","log_level":"info"}]}`,
		},
		{
			name: "single element, spaced",
			doc:  "{ \"name\": \"n\", \"plugins\" : [ {\"type\": \"a\"} ] }",
			want: "{ \"name\": \"n\", \"plugins\" : [ {\"type\": \"a\"}, {\"type\":\"sidelane-cni\",\"log_level\":\"info\"} ] }",
		},
		{
			name: "indented, unknown fields and number formats kept",
			doc:  "{\n  \"x\": 1.50,\n  \"plugins\": [\n    {\"type\": \"a\", \"mtu\": 1e3}\n  ],\n  \"y\": {\"z\": [1,2]}\n}\n",
			want: "{\n  \"x\": 1.50,\n  \"plugins\": [\n    {\"type\": \"a\", \"mtu\": 1e3},\n    {\n      \"type\": \"sidelane-cni\",\n      \"log_level\": \"info\"\n    }\n  ],\n  \"y\": {\"z\": [1,2]}\n}\n",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, err := Entry([]byte(tc.doc), entry)
			if err != nil {
				t.Fatal(err)
			}
			got, changed, err := Upsert([]byte(tc.doc), "sidelane-cni", e)
			if err != nil || !changed {
				t.Fatalf("Upsert: changed=%v err=%v", changed, err)
			}
			if string(got) != tc.want {
				t.Fatalf("Upsert:\n%q\nwant\n%q", got, tc.want)
			}
			again, changed, err := Upsert(got, "sidelane-cni", e)
			if err != nil || changed || !bytes.Equal(again, got) {
				t.Fatalf("second Upsert changed the document: %v %q", err, again)
			}
			back, found, err := Remove(got, "sidelane-cni")
			if err != nil || !found || string(back) != tc.doc {
				t.Fatalf("Remove: found=%v err=%v\n%q\nwant\n%q", found, err, back, tc.doc)
			}
		})
	}
}

func TestUpsertReplacesAndDeduplicates(t *testing.T) {
	doc := `{"plugins":[{"type":"sidelane-cni","old":1},{"type":"a"},{"type":"sidelane-cni","old":2}]}`
	got, changed, err := Upsert([]byte(doc), "sidelane-cni", []byte(`{"type":"sidelane-cni","new":true}`))
	if err != nil || !changed {
		t.Fatal(changed, err)
	}
	want := `{"plugins":[{"type":"sidelane-cni","new":true},{"type":"a"}]}`
	if string(got) != want {
		t.Fatalf("got %s want %s", got, want)
	}
	if n, _ := Count(got, "sidelane-cni"); n != 1 {
		t.Fatalf("%d entries", n)
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct{ doc, want string }{
		{`{"plugins":[`, "invalid JSON"},
		{`[1]`, "not a JSON object"},
		{`{"name":"x"}`, "no inline \"plugins\""},
		{`{"plugins":{}}`, "not an array"},
		{`{"plugins":[],"plugins":[]}`, "duplicate"},
		{`{"plugins":[]} x`, "trailing data"},
	}
	for _, tc := range cases {
		_, err := Parse([]byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%s) = %v, want %q", tc.doc, err, tc.want)
		}
	}
	if _, _, err := Upsert([]byte(`{"plugins":[]}`), "x", []byte(`{}`)); err == nil {
		t.Error("Upsert into an empty plugins list must fail")
	}
}

func TestFromConf(t *testing.T) {
	conf := "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"bridge\",\"disableCheck\":true}\n"
	got, err := FromConf([]byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	want := "{\n  \"cniVersion\": \"1.0.0\",\n  \"name\": \"n\",\n  \"disableCheck\": true,\n  \"plugins\": [\n    {\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"bridge\",\"disableCheck\":true}\n  ]\n}\n"
	if string(got) != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	for _, bad := range []string{`{"name":"n"}`, `{"type":"bridge"}`, `nope`} {
		if _, err := FromConf([]byte(bad)); err == nil {
			t.Errorf("FromConf(%s): want an error", bad)
		}
	}
}
