// Package conflist edits CNI network configuration lists at the byte level so that chaining a
// plugin into another project's conflist never reformats, reorders or rewrites anything but the
// one entry that is added, replaced or removed.
//
// The primary CNI (Calico, Cilium, Flannel …) owns its conflist. Re-marshalling the file through
// a Go map would reorder keys, change number formats and indentation, and make it impossible to
// give the file back byte for byte. Instead the functions here locate the byte spans of the
// "plugins" array elements with a streaming JSON decoder and splice bytes: Append inserts
// ",<separator><entry>" right after the last element, and Remove deletes exactly that span, so
// Remove(Append(b)) == b.
package conflist

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
)

// Span is the byte range [Start, End) of one element of the "plugins" array.
type Span struct {
	Start, End int
	// Type is the element's "type" field ("" when absent or not a string).
	Type string
}

// Parsed describes the layout of a conflist document.
type Parsed struct {
	// Plugins are the elements of the top-level "plugins" array, in order.
	Plugins []Span
	// ArrayStart is the offset of the '[' that opens the plugins array, ArrayEnd the offset
	// just after the matching ']'.
	ArrayStart, ArrayEnd int
}

// ErrNoPlugins is returned when a conflist has no inline "plugins" array.
var ErrNoPlugins = errors.New(`conflist has no inline "plugins" array`)

// Parse locates the plugins array of a conflist. It fails on invalid JSON, on a top-level
// value that is not an object, on a duplicate or non-array "plugins" key, and (ErrNoPlugins)
// when there is no "plugins" key.
func Parse(b []byte) (Parsed, error) {
	var p Parsed
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return p, fmt.Errorf("invalid JSON: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return p, fmt.Errorf("invalid conflist: top-level value is not a JSON object")
	}
	found := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return p, fmt.Errorf("invalid JSON: %w", err)
		}
		key, _ := tok.(string)
		if key != "plugins" {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return p, fmt.Errorf("invalid JSON in %q: %w", key, err)
			}
			continue
		}
		if found {
			return p, fmt.Errorf(`invalid conflist: duplicate "plugins" key`)
		}
		found = true
		before := int(dec.InputOffset())
		tok, err = dec.Token()
		if err != nil {
			return p, fmt.Errorf(`invalid JSON in "plugins": %w`, err)
		}
		if d, ok := tok.(json.Delim); !ok || d != '[' {
			return p, fmt.Errorf(`invalid conflist: "plugins" is not an array`)
		}
		p.ArrayStart = bytes.IndexByte(b[before:], '[') + before
		for dec.More() {
			off := skipSpaceComma(b, int(dec.InputOffset()))
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return p, fmt.Errorf(`invalid JSON in "plugins" element %d: %w`, len(p.Plugins), err)
			}
			end := int(dec.InputOffset())
			var typed struct {
				Type any `json:"type"`
			}
			_ = json.Unmarshal(raw, &typed)
			t, _ := typed.Type.(string)
			p.Plugins = append(p.Plugins, Span{Start: off, End: end, Type: t})
		}
		if _, err := dec.Token(); err != nil { // ']'
			return p, fmt.Errorf(`invalid JSON in "plugins": %w`, err)
		}
		p.ArrayEnd = int(dec.InputOffset())
	}
	if _, err := dec.Token(); err != nil { // '}'
		return p, fmt.Errorf("invalid JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return p, fmt.Errorf("invalid JSON: trailing data after the top-level object")
	}
	if !found {
		return p, ErrNoPlugins
	}
	return p, nil
}

func skipSpaceComma(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r' || b[i] == ',') {
		i++
	}
	return i
}

// Find returns the indexes of the plugins of the given type.
func (p Parsed) Find(pluginType string) []int {
	var idx []int
	for i, s := range p.Plugins {
		if s.Type == pluginType {
			idx = append(idx, i)
		}
	}
	return idx
}

// indent returns the whitespace that precedes the first plugin on its line ("" for a
// single-line document) and the separator to put between the comma and a new element.
func (p Parsed) separator(b []byte) (sep, indent string) {
	if len(p.Plugins) == 0 {
		return "", ""
	}
	// Separator used between the last two elements, or between '[' and the first one.
	var from int
	if n := len(p.Plugins); n >= 2 {
		from = p.Plugins[n-2].End
	} else {
		from = p.ArrayStart + 1
	}
	to := p.Plugins[len(p.Plugins)-1].Start
	sep = strings.TrimLeft(string(b[from:to]), ",")
	sep = strings.ReplaceAll(sep, ",", "")
	if i := strings.LastIndexByte(sep, '\n'); i >= 0 {
		indent = sep[i+1:]
	}
	return sep, indent
}

// indentUnit guesses one indentation step of the document from the first indented line.
func indentUnit(b []byte) string {
	for _, line := range strings.Split(string(b), "\n")[1:] {
		trimmed := strings.TrimLeft(line, " \t")
		if trimmed == "" || len(trimmed) == len(line) {
			continue
		}
		return line[:len(line)-len(trimmed)]
	}
	return "  "
}

// Entry renders a plugin entry: "type" first, then the other keys in lexical order, indented
// like the document it goes into (compact when the document is on one line).
func Entry(doc []byte, entry map[string]any) ([]byte, error) {
	p, err := Parse(doc)
	if err != nil {
		return nil, err
	}
	_, indent := p.separator(doc)
	multiline := bytes.IndexByte(doc, '\n') >= 0 && bytes.IndexByte(bytes.TrimSpace(doc), '\n') >= 0
	return renderEntry(entry, multiline, indent, indentUnit(doc))
}

func renderEntry(entry map[string]any, multiline bool, indent, unit string) ([]byte, error) {
	t, ok := entry["type"].(string)
	if !ok || t == "" {
		return nil, fmt.Errorf(`plugin entry has no string "type"`)
	}
	keys := make([]string, 0, len(entry))
	for k := range entry {
		if k != "type" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	keys = append([]string{"type"}, keys...)
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			buf.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		var vb []byte
		var err error
		if multiline {
			vb, err = json.MarshalIndent(entry[k], indent+unit, unit)
		} else {
			vb, err = json.Marshal(entry[k])
		}
		if err != nil {
			return nil, fmt.Errorf("plugin entry field %q: %w", k, err)
		}
		if multiline {
			buf.WriteString("\n" + indent + unit)
		}
		buf.Write(kb)
		buf.WriteByte(':')
		if multiline {
			buf.WriteByte(' ')
		}
		buf.Write(vb)
	}
	if multiline {
		buf.WriteString("\n" + indent)
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// Upsert makes entry (already rendered JSON, e.g. by Entry) the plugin of type pluginType in
// doc. With no such plugin, it is appended after the last element, separated like the other
// elements; with one, that element's bytes are replaced in place (nothing moves); with more
// than one, the first is replaced and the others are removed. Every other byte of doc is kept.
// changed reports whether the result differs from doc.
func Upsert(doc []byte, pluginType string, entry []byte) (out []byte, changed bool, err error) {
	p, err := Parse(doc)
	if err != nil {
		return nil, false, err
	}
	if len(p.Plugins) == 0 {
		return nil, false, fmt.Errorf(`invalid conflist: "plugins" is empty`)
	}
	idx := p.Find(pluginType)
	if len(idx) == 0 {
		sep, _ := p.separator(doc)
		last := p.Plugins[len(p.Plugins)-1]
		out = make([]byte, 0, len(doc)+len(entry)+len(sep)+1)
		out = append(out, doc[:last.End]...)
		out = append(out, ',')
		out = append(out, sep...)
		out = append(out, entry...)
		out = append(out, doc[last.End:]...)
		return out, true, nil
	}
	// Remove duplicates (from the back so the offsets stay valid), then replace the first.
	out = append([]byte(nil), doc...)
	for j := len(idx) - 1; j >= 1; j-- {
		out = removeSpan(out, p, idx[j])
	}
	first := p.Plugins[idx[0]]
	if bytes.Equal(out[first.Start:first.End], entry) && len(idx) == 1 {
		return doc, false, nil
	}
	res := make([]byte, 0, len(out)+len(entry))
	res = append(res, out[:first.Start]...)
	res = append(res, entry...)
	res = append(res, out[first.End:]...)
	return res, true, nil
}

// removeSpan deletes element i with the separator that ties it to its predecessor (or, for the
// first element, to its successor), the exact inverse of how Upsert appends.
func removeSpan(b []byte, p Parsed, i int) []byte {
	s := p.Plugins[i]
	var from, to int
	switch {
	case i > 0:
		from, to = p.Plugins[i-1].End, s.End
	case len(p.Plugins) > 1:
		from, to = s.Start, p.Plugins[1].Start
	default:
		from, to = s.Start, s.End
	}
	out := make([]byte, 0, len(b)-(to-from))
	out = append(out, b[:from]...)
	return append(out, b[to:]...)
}

// Remove deletes every plugin of type pluginType from doc, keeping every other byte, and
// reports whether there was one.
func Remove(doc []byte, pluginType string) (out []byte, found bool, err error) {
	p, err := Parse(doc)
	if err != nil {
		return nil, false, err
	}
	idx := p.Find(pluginType)
	if len(idx) == 0 {
		return doc, false, nil
	}
	out = doc
	for j := len(idx) - 1; j >= 0; j-- {
		out = removeSpan(out, p, idx[j])
	}
	return out, true, nil
}

// Count returns how many plugins of type pluginType doc holds.
func Count(doc []byte, pluginType string) (int, error) {
	p, err := Parse(doc)
	if err != nil {
		return 0, err
	}
	return len(p.Find(pluginType)), nil
}

// FromConf wraps a single-plugin .conf document into a conflist whose only plugin is the
// .conf's bytes verbatim, with the .conf's "name" and "cniVersion" (and "disableCheck" when
// set) lifted to the list, like libcni.ConfListFromConf does.
func FromConf(conf []byte) ([]byte, error) {
	var top struct {
		Name         *string         `json:"name"`
		CNIVersion   *string         `json:"cniVersion"`
		DisableCheck json.RawMessage `json:"disableCheck"`
		Type         string          `json:"type"`
	}
	if err := json.Unmarshal(conf, &top); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if top.Type == "" {
		return nil, fmt.Errorf(`invalid conf: no "type"`)
	}
	if top.Name == nil {
		return nil, fmt.Errorf(`invalid conf: no "name"`)
	}
	var buf bytes.Buffer
	buf.WriteString("{\n")
	if top.CNIVersion != nil {
		v, _ := json.Marshal(*top.CNIVersion)
		fmt.Fprintf(&buf, "  \"cniVersion\": %s,\n", v)
	}
	n, _ := json.Marshal(*top.Name)
	fmt.Fprintf(&buf, "  \"name\": %s,\n", n)
	if len(top.DisableCheck) > 0 {
		fmt.Fprintf(&buf, "  \"disableCheck\": %s,\n", bytes.TrimSpace(top.DisableCheck))
	}
	buf.WriteString("  \"plugins\": [\n    ")
	buf.Write(bytes.TrimSpace(conf))
	buf.WriteString("\n  ]\n}\n")
	if _, err := Parse(buf.Bytes()); err != nil {
		return nil, fmt.Errorf("converting conf to conflist: %w", err)
	}
	return buf.Bytes(), nil
}
