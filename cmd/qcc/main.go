// Command qcc compiles ONNX transformer models: it folds the exporter's noise, recognises
// transformer blocks, places Q/DQ nodes for TensorRT and writes an optimized model.
//
//	qcc -passes=fold model.onnx -o model.folded.onnx
//	qcc -passes=fold -emit=text model.onnx
//	qcc -list-passes
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/qcc-dev/qcc/codegen/cuda"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ir/text"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes"
	"github.com/qcc-dev/qcc/passes/qdqcheck"
	"github.com/qcc-dev/qcc/report"
	"github.com/qcc-dev/qcc/target"
)

var version = "0.1.0-dev"

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// exit codes
const (
	exitOK    = 0
	exitFail  = 1 // the model or a pass failed
	exitUsage = 2 // bad flags or arguments
)

type options struct {
	passes, out, emit, external string
	printAfter, debugOnly       string
	printChanged, verifyEach    bool
	stats                       statsFlag
	timePasses                  bool
	report                      string
	listPasses, showVersion     bool
	overwrite, fsync            bool
	cpuProfile                  string
	ortLib                      string
	target, precision           string
	printPipeline               bool
	calibData                   string
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("qcc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.passes, "passes", "", "comma-separated pass pipeline, e.g. fold or fold,fuse<target=ort>; wins over -target")
	fs.StringVar(&o.target, "target", "", "runtime to compile for: "+strings.Join(target.Names(), ", ")+"; expands into the pipeline that is right and fastest there (see -print-pipeline)")
	fs.StringVar(&o.precision, "precision", "", "with -target: "+precisionList()+" (default: the target's, int8 except ort-cuda's fp16)")
	fs.BoolVar(&o.printPipeline, "print-pipeline", false, "print the pipeline -target/-precision (or -passes) stands for, then exit; no model needed")
	fs.StringVar(&o.calibData, "calib-data", "", "with -target: calibration inputs for its qdq and precision steps (FILE.npz, DIR of ONNX test data, or random:N[:SEED]); default random")
	fs.StringVar(&o.out, "o", "", "output file (required with -emit=onnx)")
	fs.StringVar(&o.emit, "emit", "onnx", "output format: onnx, text, or cuda (kernels.h, kernels.cu, check.cu and check data in the -o folder)")
	fs.StringVar(&o.external, "external-data", "auto", "store tensor data in OUT.data: auto (when the input did, or past 2 GB), always, never")
	fs.StringVar(&o.printAfter, "print-after", "", "print the model after these passes (comma-separated, or all)")
	fs.BoolVar(&o.printChanged, "print-changed", false, "print the model after every pass that changed it")
	fs.BoolVar(&o.verifyEach, "verify-each", false, "verify the model after every pass")
	fs.Var(&o.stats, "stats", "print a summary of the run (blocks found/fused/refused, Q/DQ pairs, precision, output size) and what each pass did; -stats=json: the same as one JSON object on stdout")
	fs.StringVar(&o.report, "report", "", "write an HTML report of the run to this file: one self-contained page (blocks per layer and why each stayed unfused, quantized tensors with ranges and histograms, precision of every node)")
	fs.BoolVar(&o.timePasses, "time-passes", false, "print the time each pass took, and the load and the write")
	fs.StringVar(&o.debugOnly, "debug-only", "", "print debug output of these passes (comma-separated)")
	fs.BoolVar(&o.listPasses, "list-passes", false, "list the available passes and their options, then exit")
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
	fs.BoolVar(&o.overwrite, "overwrite-input", false, "allow -o to name the input file")
	fs.StringVar(&o.ortLib, "ort-lib", "", "ONNX Runtime library for passes that run the model (qdq calibration); default $QCC_ORT_LIB, then the project cache that scripts/setup.sh fills")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the run (load, passes, save) to this file, for go tool pprof")
	fs.BoolVar(&o.fsync, "fsync", false, "flush the output to disk before renaming it into place (durable across power loss)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: qcc [flags] MODEL.onnx\n\nflags:\n")
		fs.PrintDefaults()
	}
	// Flags may come after the model too (qcc -passes=fold model.onnx -o out.onnx), so
	// parse again after each positional argument.
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return exitOK
			}
			return exitUsage
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	switch {
	case o.showVersion:
		fmt.Fprintf(stdout, "qcc %s\n", version)
		return exitOK
	case o.listPasses:
		listPasses(stdout)
		return exitOK
	case o.printPipeline:
		sel, err := selectPipeline(o)
		if err != nil {
			fmt.Fprintf(stderr, "qcc: %v\n", err)
			return exitUsage
		}
		// The pipeline alone on stdout (for $(qcc -target=X -print-pipeline)); where it
		// came from on stderr.
		fmt.Fprintln(stdout, sel.pipe.String())
		sel.writeOrigin(stderr)
		return exitOK
	}
	if o.ortLib != "" {
		// Passes find the library through ort.LibraryPath, which reads the variable.
		os.Setenv(ort.EnvLib, o.ortLib)
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintf(stderr, "qcc: -cpuprofile: %v\n", err)
			return exitUsage
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	if err := compile(positional, o, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "qcc: %v\n", err)
		var ue usageError
		if errors.As(err, &ue) {
			return exitUsage
		}
		return exitFail
	}
	return exitOK
}

type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func compile(args []string, o options, stdout, stderr io.Writer) error {
	if len(args) != 1 {
		return usagef("expected one model file, got %d arguments (see qcc -h)", len(args))
	}
	in := args[0]
	var mode ir.ExternalMode
	switch o.external {
	case "auto":
		mode = ir.ExternalAuto
	case "always":
		mode = ir.ExternalAlways
	case "never":
		mode = ir.ExternalNever
	default:
		return usagef("-external-data=%s: want auto, always or never", o.external)
	}
	switch o.emit {
	case "onnx":
		if o.out == "" {
			return usagef("-emit=onnx needs an output file: -o OUT.onnx")
		}
	case "text":
	case "cuda":
		if o.out == "" {
			return usagef("-emit=cuda needs an output folder: -o OUTDIR")
		}
	default:
		return usagef("-emit=%s: want onnx, text or cuda", o.emit)
	}
	sel, err := selectPipeline(o)
	if err != nil {
		return err
	}
	pipe := sel.pipe
	for _, list := range []string{o.printAfter, o.debugOnly} {
		for _, name := range splitList(list) {
			if name != "all" && pass.Lookup(passes.All, name) == nil {
				return usagef("no pass named %q (see qcc -list-passes)", name)
			}
		}
	}
	if o.out != "" {
		if err := checkOutput(in, o.out, o.overwrite); err != nil {
			return err
		}
	}

	// -time-passes also times what lies outside the pipeline: reading and checking the
	// input, and writing the output, often most of a large model's compile.
	start := time.Now()
	m, err := ir.Load(in)
	if err != nil {
		return err
	}
	if err := m.Verify(); err != nil {
		return fmt.Errorf("%s is not a valid model: %w", in, err)
	}
	loadTime := time.Since(start)
	nodesIn := m.Graph.NumNodes()
	var rep *pass.Report
	if pipe != nil {
		inst := &pass.Instrumentation{
			PrintAfter:   splitList(o.printAfter),
			PrintChanged: o.printChanged,
			VerifyEach:   o.verifyEach,
			TimePasses:   o.timePasses,
			DebugOnly:    splitList(o.debugOnly),
			Out:          stderr,
			Print: func(w io.Writer, m *ir.Model) error {
				return text.Print(w, m, text.Options{})
			},
		}
		for _, s := range pipe.Steps {
			if s.Pass.Name == "qdq" {
				// TensorRT's placement rules hold from the quantization on; an input
				// that arrives quantized (QAT) may break them before qdq normalises it.
				inst.Verifiers = append(inst.Verifiers, qdqcheck.Verifier)
				break
			}
		}
		rep, err = pipe.Run(context.Background(), m, inst)
		if err != nil {
			if o.stats.on() || o.timePasses {
				sel.writeOrigin(stderr)
				rep.WriteStats(stderr, o.timePasses)
			}
			return err
		}
	}
	if err := m.Verify(); err != nil {
		return fmt.Errorf("internal error: the compiled model is invalid, not written: %w", err)
	}
	var extra strings.Builder // the emitter's lines in -stats
	start = time.Now()
	if err := emit(m, in, o, mode, stdout, stderr, &extra); err != nil {
		return err
	}
	emitTime := time.Since(start)
	var run *report.Run
	if o.stats.on() || o.report != "" {
		// The record is built from the output model (its blocks, types and quantizers)
		// and what the passes recorded. A failure costs the summary, not the run, unless
		// the report was asked for.
		r, err := report.Build(m, rep, nodesIn)
		if err != nil && o.report != "" {
			return err
		}
		if err != nil {
			fmt.Fprintf(stderr, "qcc: no summary: %v\n", err)
		}
		if r != nil {
			r.Input, r.Pipeline, r.From = in, "", sel.from
			if pipe != nil {
				r.Pipeline = pipe.String()
			}
			if o.emit == "onnx" {
				r.Output = o.out
				r.Summary.OutputBytes = fileSize(o.out) + fileSize(o.out+".data")
			}
			run = r
		}
	}
	switch {
	case o.stats == "json" && run != nil:
		w := stdout
		if o.emit == "text" && o.out == "" {
			w = stderr // the model text is on stdout
		}
		if err := run.WriteJSON(w); err != nil {
			return err
		}
	case o.stats.on() || o.timePasses:
		if run != nil {
			run.WriteSummary(stderr)
		}
		sel.writeOrigin(stderr)
		if o.timePasses {
			fmt.Fprintf(stderr, "%-10s nodes %d  %.3fs\n", "load", nodesIn, loadTime.Seconds())
		}
		if rep != nil {
			rep.WriteStats(stderr, o.timePasses)
		}
		if o.timePasses {
			fmt.Fprintf(stderr, "%-10s %s  %.3fs\n", "emit", o.emit, emitTime.Seconds())
		}
		fmt.Fprint(stderr, extra.String())
	}
	if o.report != "" && run != nil {
		var buf bytes.Buffer
		if err := run.WriteHTML(&buf); err != nil {
			return err
		}
		if err := ir.WriteFileAtomic(o.report, buf.Bytes()); err != nil {
			return err
		}
	}
	return nil
}

// emit writes the compiled model in the -emit format.
func emit(m *ir.Model, in string, o options, mode ir.ExternalMode, stdout, stderr, stats io.Writer) error {
	switch o.emit {
	case "cuda":
		res, err := cuda.Emit(m, o.out, cuda.Options{Source: filepath.Base(in), CheckData: true, Log: stderr})
		if err == nil {
			// What got a kernel, and why the rest did not.
			fmt.Fprintf(stats, "%-10s kernels %d for %d blocks\n", "emit-cuda", len(res.Kernels), len(res.Instances))
			for _, s := range res.Skipped {
				fmt.Fprintf(stats, "  note: no kernel: %s\n", s)
			}
			for _, s := range res.Notes {
				fmt.Fprintf(stats, "  note: kernel: %s\n", s)
			}
		}
		return err
	case "text":
		if o.out != "" {
			var buf strings.Builder
			if err := text.Print(&buf, m, text.Options{}); err != nil {
				return err
			}
			return ir.WriteFileAtomic(o.out, []byte(buf.String()))
		}
		return text.Print(stdout, m, text.Options{})
	}
	return ir.Save(m, o.out, ir.SaveOptions{External: mode, Sync: o.fsync})
}

func fileSize(path string) int64 {
	if st, err := os.Stat(path); err == nil {
		return st.Size()
	}
	return 0
}

// statsFlag is -stats (text) or -stats=json.
type statsFlag string

func (f *statsFlag) String() string   { return string(*f) }
func (f *statsFlag) IsBoolFlag() bool { return true }
func (f *statsFlag) on() bool         { return *f != "" }
func (f *statsFlag) Set(s string) error {
	switch s {
	case "true", "text":
		*f = "text"
	case "false":
		*f = ""
	case "json":
		*f = "json"
	default:
		return fmt.Errorf("want -stats, -stats=json or -stats=false")
	}
	return nil
}

// selection is the pipeline a run uses and where it came from.
type selection struct {
	pipe  *pass.Pipeline // nil: no passes (load, verify, save)
	from  string         // "-passes", "-target=X -precision=P", ...
	notes []string
}

func (s *selection) writeOrigin(w io.Writer) {
	if s.pipe == nil {
		fmt.Fprintf(w, "pipeline   (none: no -passes or -target)\n")
		return
	}
	fmt.Fprintf(w, "pipeline   %s  (from %s)\n", s.pipe, s.from)
	for _, n := range s.notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
}

// selectPipeline resolves -passes, -target and -precision: an explicit -passes wins
// (and says so), else the target's table entry is expanded.
func selectPipeline(o options) (*selection, error) {
	if o.precision != "" && o.target == "" && o.passes == "" {
		return nil, usagef("-precision=%s needs -target (with -passes, the passes choose the precision)", o.precision)
	}
	if o.calibData != "" && o.target == "" {
		return nil, usagef("-calib-data applies to a -target pipeline; with -passes write qdq<data=%s>", o.calibData)
	}
	if o.passes != "" {
		pipe, err := pass.Parse(o.passes, passes.All)
		if err != nil {
			return nil, usageError{err}
		}
		sel := &selection{pipe: pipe, from: "-passes"}
		if o.target != "" || o.precision != "" {
			var ignored []string
			for _, f := range [][2]string{{"target", o.target}, {"precision", o.precision}} {
				if f[1] != "" {
					ignored = append(ignored, "-"+f[0]+"="+f[1])
				}
			}
			sel.from = "-passes, which wins over " + strings.Join(ignored, " ")
			sel.notes = append(sel.notes, "-target and -precision are ignored when -passes is given")
		}
		return sel, nil
	}
	if o.target == "" {
		return &selection{}, nil
	}
	e, err := target.Expand(o.target, target.Precision(o.precision), passes.All)
	if err != nil {
		return nil, usageError{err}
	}
	if o.calibData != "" {
		n := 0
		for _, s := range e.Pipeline.Steps {
			// The precision step's range rules calibrate on the same data, so that
			// it reads the statistics the qdq step collected instead of running again.
			if s.Pass.Name == "qdq" || s.Pass.Name == "precision" {
				s.Opts["data"] = o.calibData
				n++
			}
		}
		if n == 0 {
			return nil, usagef("-calib-data: -target=%s -precision=%s does not calibrate (no qdq or precision step)", o.target, e.Precision)
		}
	}
	return &selection{pipe: e.Pipeline, from: fmt.Sprintf("-target=%s -precision=%s", e.Target.Name, e.Precision), notes: e.Notes}, nil
}

func precisionList() string {
	var ps []string
	for _, p := range target.Precisions {
		ps = append(ps, string(p))
	}
	return strings.Join(ps, ", ")
}

// checkOutput refuses to write over the input model or its external data.
func checkOutput(in, out string, overwrite bool) error {
	if overwrite {
		return nil
	}
	same := func(a, b string) bool {
		sa, errA := os.Stat(a)
		sb, errB := os.Stat(b)
		if errA == nil && errB == nil {
			return os.SameFile(sa, sb)
		}
		aa, _ := filepath.Abs(a)
		ab, _ := filepath.Abs(b)
		return aa == ab
	}
	if same(in, out) {
		return usagef("-o %s is the input file; qcc does not modify its input (use -overwrite-input to allow it)", out)
	}
	if _, err := os.Stat(out + ".data"); err == nil {
		m, err := ir.Load(in)
		if err == nil && m.ExternalFiles()[filepath.Clean(out+".data")] {
			return usagef("-o %s would replace %s.data, which holds the input's weights", out, out)
		}
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func listPasses(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	for _, p := range passes.All {
		kind := ""
		if p.Analysis {
			kind = " (analysis)"
		}
		fmt.Fprintf(tw, "%s\t%s%s\n", p.Name, p.Summary(), kind)
		for _, o := range p.Options {
			fmt.Fprintf(tw, "  <%s=%s>\t%s\n", o.Name, o.Default, o.Doc)
		}
	}
	tw.Flush()
}
