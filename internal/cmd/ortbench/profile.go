package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// traceEvent is one record of ORT's Chrome-trace profile; node kernels are
// category "Node" with names ending in _kernel_time.
type traceEvent struct {
	Cat  string `json:"cat"`
	Name string `json:"name"`
	Dur  int64  `json:"dur"` // microseconds
	Args struct {
		OpName string `json:"op_name"`
	} `json:"args"`
}

// printProfile sums the newest trace under prefix by operator type and prints
// milliseconds and node executions per run, most expensive first.
func printProfile(w io.Writer, prefix string, runs int) error {
	files, err := filepath.Glob(prefix + "*.json")
	if err != nil || len(files) == 0 {
		return fmt.Errorf("no profile %s*.json", prefix)
	}
	sort.Strings(files)
	data, err := os.ReadFile(files[len(files)-1])
	if err != nil {
		return err
	}
	var events []traceEvent
	if err := json.Unmarshal(data, &events); err != nil {
		return fmt.Errorf("%s: %v", files[len(files)-1], err)
	}
	type sum struct {
		op    string
		us, n int64
	}
	by := map[string]*sum{}
	var total int64
	for _, e := range events {
		if e.Cat != "Node" || !strings.HasSuffix(e.Name, "_kernel_time") {
			continue
		}
		s := by[e.Args.OpName]
		if s == nil {
			s = &sum{op: e.Args.OpName}
			by[e.Args.OpName] = s
		}
		s.us += e.Dur
		s.n++
		total += e.Dur
	}
	var rows []*sum
	for _, s := range by {
		rows = append(rows, s)
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].us != rows[j].us {
			return rows[i].us > rows[j].us
		}
		return rows[i].op < rows[j].op
	})
	fmt.Fprintf(w, "%s: %.2f ms of kernels per run\n", filepath.Base(prefix), float64(total)/1e3/float64(runs))
	for _, s := range rows {
		fmt.Fprintf(w, "  %-32s %8.2f ms %5.1f%% %5d nodes\n", s.op, float64(s.us)/1e3/float64(runs), 100*float64(s.us)/float64(total), s.n/int64(runs))
	}
	return nil
}
