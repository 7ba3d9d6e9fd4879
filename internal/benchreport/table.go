package benchreport

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// Machine describes where a benchmark ran; it heads every report, because these machines are
// noisy and a figure means little without it.
type Machine struct {
	Cores     int       `json:"cores"`
	LoadAvg   string    `json:"loadAvg"`
	Kernel    string    `json:"kernel"`
	GoVersion string    `json:"goVersion"`
	Start     time.Time `json:"start"`
}

// ReadMachine reads the machine description from /proc.
func ReadMachine(start time.Time) Machine {
	m := Machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version(), Start: start}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// Report is one `make bench` run.
type Report struct {
	Machine  Machine       `json:"machine"`
	Duration time.Duration `json:"durationNanos"`
	Rows     []Row         `json:"rows"`
	Errors   []string      `json:"errors,omitempty"` // areas that failed to run
}

// Failed lists the rows whose target is not met.
func (r Report) Failed() []Row {
	var out []Row
	for _, row := range r.Rows {
		if row.Pass != nil && !*row.Pass {
			out = append(out, row)
		}
	}
	return out
}

// WriteTable prints the report as one side-by-side table.
func (r Report) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "machine: %d cores, load average %s, kernel %s, %s, started %s\n\n",
		r.Machine.Cores, r.Machine.LoadAvg, r.Machine.Kernel, r.Machine.GoVersion, r.Machine.Start.Format(time.RFC3339))
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "AREA\tBENCHMARK\tSIDELANE\tPEER\tRATIO (min–max)\tTARGET\tMET")
	for _, row := range r.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", row.Area, row.Name, value(row.Ours, row.OursMin, row.OursMax, row.Unit),
			peer(row), ratio(row), row.Target, met(row.Pass))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	for _, row := range r.Rows {
		if row.Note != "" {
			fmt.Fprintf(w, "  note [%s] %s: %s\n", row.Area, row.Name, row.Note)
		}
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "  ERROR %s\n", e)
	}
	fmt.Fprintf(w, "\n%d rows, %d targets missed, %d areas failed, %s\n", len(r.Rows), len(r.Failed()), len(r.Errors),
		r.Duration.Round(time.Second))
	return nil
}

func value(v, lo, hi float64, unit string) string {
	s := fmt.Sprintf("%s %s", num(v), unit)
	if lo != 0 || hi != 0 {
		s += fmt.Sprintf(" (%s–%s)", num(lo), num(hi))
	}
	return s
}

func peer(row Row) string {
	if row.Peer == "" {
		return "-"
	}
	if row.PeerVal == 0 {
		return row.Peer
	}
	return fmt.Sprintf("%s: %s %s", row.Peer, num(row.PeerVal), row.Unit)
}

func ratio(row Row) string {
	if row.Ratio == 0 {
		return "-"
	}
	s := num(row.Ratio) + "x"
	if row.RatioMin != 0 || row.RatioMax != 0 {
		s += fmt.Sprintf(" (%s–%s)", num(row.RatioMin), num(row.RatioMax))
	}
	return s
}

func met(p *bool) string {
	switch {
	case p == nil:
		return ""
	case *p:
		return "yes"
	default:
		return "NO"
	}
}

// num formats a figure with three significant digits.
func num(v float64) string {
	switch a := abs(v); {
	case a == 0:
		return "0"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

func abs(v float64) float64 {
	if v < 0 {
		return -v
	}
	return v
}

// WriteJSON writes the report as JSON to dir/<timestamp>.json and dir/latest.json.
func (r Report) WriteJSON(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("results dir: %w", err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode report: %w", err)
	}
	name := filepath.Join(dir, r.Machine.Start.UTC().Format("20060102T150405Z")+".json")
	for _, p := range []string{name, filepath.Join(dir, "latest.json")} {
		if err := os.WriteFile(p, append(b, '\n'), 0o644); err != nil {
			return "", fmt.Errorf("write %s: %w", p, err)
		}
	}
	return name, nil
}
