package unixhttp

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sidelane/sidelane/internal/agentapi"
)

func TestPostReport(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "cni.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan agentapi.Report, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != agentapi.PathReports || r.Method != http.MethodPost {
			http.Error(w, "wrong route", http.StatusNotFound)
			return
		}
		var rep agentapi.Report
		if err := json.NewDecoder(r.Body).Decode(&rep); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if rep.Name == "refuse" {
			http.Error(w, "refused", http.StatusBadRequest)
			return
		}
		got <- rep
	})}
	go srv.Serve(l)
	defer srv.Close()

	want := agentapi.Report{Event: agentapi.EventAdd, Namespace: "ns", Name: "p", State: agentapi.StateCaptured, Time: time.Unix(1, 0).UTC()}
	if err := PostReport(context.Background(), sock, want, time.Second); err != nil {
		t.Fatal(err)
	}
	if r := <-got; r.Name != "p" || r.State != agentapi.StateCaptured || !r.Time.Equal(want.Time) {
		t.Errorf("agent received %+v", r)
	}
	err = PostReport(context.Background(), sock, agentapi.Report{Name: "refuse"}, time.Second)
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("refused report: err = %v", err)
	}
}

func TestPostReportNoAgent(t *testing.T) {
	start := time.Now()
	err := PostReport(context.Background(), filepath.Join(t.TempDir(), "none.sock"), agentapi.Report{}, 200*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "none.sock") {
		t.Fatalf("err = %v, want an error naming the socket", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("missing agent took %v", time.Since(start))
	}
}
