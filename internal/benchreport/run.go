package benchreport

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Area is one area's benchmark.
type Area struct {
	Name   string
	Budget time.Duration
	Run    func(context.Context, Config) ([]Row, error)
}

// RunAreas runs areas one after the other, each in its own work directory under base.WorkDir
// and with its own budget, and gathers their rows into one report. An area that fails is
// named in Report.Errors; the others still run. Progress goes to progress.
func RunAreas(ctx context.Context, areas []Area, base Config, progress io.Writer) Report {
	start := time.Now()
	rep := Report{Machine: ReadMachine(start)}
	for _, a := range areas {
		fmt.Fprintf(progress, "== %s (budget %s)\n", a.Name, a.Budget)
		cfg := base
		cfg.WorkDir, cfg.Budget = filepath.Join(base.WorkDir, a.Name), a.Budget
		if err := os.MkdirAll(cfg.WorkDir, 0o755); err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("%s: %v", a.Name, err))
			continue
		}
		t0 := time.Now()
		rows, err := a.Run(ctx, cfg)
		for i := range rows {
			if rows[i].Area == "" {
				rows[i].Area = a.Name
			}
		}
		rep.Rows = append(rep.Rows, rows...)
		if err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("%s: %v", a.Name, err))
		}
		fmt.Fprintf(progress, "   %s: %d rows in %s\n", a.Name, len(rows), time.Since(t0).Round(time.Second))
	}
	rep.Duration = time.Since(start)
	return rep
}

// AreaRows returns the rows of one area.
func (r Report) AreaRows(area string) []Row {
	var out []Row
	for _, row := range r.Rows {
		if row.Area == area {
			out = append(out, row)
		}
	}
	return out
}
