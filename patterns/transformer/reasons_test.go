package transformer_test

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/qcc-dev/qcc/internal/modroot"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/patterns"
	"github.com/qcc-dev/qcc/patterns/transformer"
)

// Every refusal reason the recognisers can give must be produced by a test: a test that
// expects a refusal asserts it with expectReason, which records the reason text the
// recogniser returned; after the package's tests ran, TestMain checks each reason
// written in the source (collected with go/ast, format verbs as wildcards) against what
// was recorded. A reason only mentioned in a test file does not count: it must have come
// out of a recogniser.

// reasonDirs are the packages, relative to the module root, whose refusal reasons fuse
// reports (-stats): the pattern driver, the transformer families, the opset raise.
var reasonDirs = []string{"patterns", "patterns/transformer", "opsets"}

// notReasons are functions whose string results are not reasons (names, kinds, text
// formatting), and notReasonResult the one non-reason result of a function that returns
// a kind and a reason.
var (
	notReasons = map[string]bool{
		"String": true, "variant": true, "typeOrNone": true, "shapeString": true, "lnNames": true,
		"ffnFeatureAxis": true,
	}
	notReasonResult = map[string]int{"termDepends": 0}
)

// untestedReasonsFile lists the reasons no test produces yet, each with why: the check
// fails on an untested reason not listed there and on a listed one that is tested now.
const untestedReasonsFile = "testdata/untested-reasons.txt"

var (
	observedMu sync.Mutex
	observed   = map[string]bool{}
)

// recordReason notes a reason text a recogniser returned and a test asserted.
func recordReason(r string) {
	observedMu.Lock()
	observed[r] = true
	observedMu.Unlock()
}

// expectReason fails t unless some reason in got contains want, and records the ones
// that do.
func expectReason(t testing.TB, got []string, want string) bool {
	t.Helper()
	found := false
	for _, r := range got {
		if strings.Contains(r, want) {
			recordReason(r)
			found = true
		}
	}
	if !found {
		t.Errorf("no reason contains %q; got:\n  %s", want, strings.Join(got, "\n  "))
	}
	return found
}

// expectExactReason fails t unless want is one of the reasons in got, and records it.
func expectExactReason(t testing.TB, got []string, want string) {
	t.Helper()
	for _, r := range got {
		if r == want {
			recordReason(r)
			return
		}
	}
	t.Errorf("no reason is %q; got:\n  %s", want, strings.Join(got, "\n  "))
}

// goldenReasons records reasons a golden file holds, once a test found its output equal
// to the golden.
func goldenReasons(rs []string) {
	for _, r := range rs {
		recordReason(r)
	}
}

// reportReasons are all the reasons a fuse report gives: refusals, blocks left, and
// Softmaxes that are not attention.
func reportReasons(rep *transformer.Report) []string {
	var out []string
	for _, r := range rep.Refusals {
		out = append(out, r.Reason)
	}
	out = append(out, rep.Left...)
	out = append(out, rep.Softmax...)
	return out
}

// refusalReasons are the reasons of refusals.
func refusalReasons(refs []patterns.Refusal) []string {
	var out []string
	for _, r := range refs {
		out = append(out, r.Reason)
	}
	return out
}

// reasonSite is a reason as written in the source: where, and the pattern its text
// matches.
type reasonSite struct {
	pos  string // file:line
	text string // the literal with format verbs and computed parts as "…"
	re   *regexp.Regexp
}

var verb = regexp.MustCompile(`%[-+# 0-9.*]*[a-zA-Z%]`)

// collectReasons parses the non-test files of dirs and returns the reason strings:
// non-empty strings (literals, fmt.Sprintf formats, concatenations) returned in a string
// result, or assigned to a variable or field named why or reason.
func collectReasons(root string, dirs []string) ([]reasonSite, error) {
	var sites []reasonSite
	fset := token.NewFileSet()
	seen := map[string]bool{}
	for _, d := range dirs {
		paths, err := filepath.Glob(filepath.Join(root, d, "*.go"))
		if err != nil {
			return nil, err
		}
		// The package's string constants: a reason may be one (return nil, xReason, nil).
		consts := map[string]ast.Expr{}
		// Reason constructors: functions with a format parameter (e.fail(format, args...)),
		// by name, with the parameter's position.
		formatFuncs := map[string]int{}
		var files []*ast.File
		for _, file := range paths {
			if strings.HasSuffix(file, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, file, nil, 0)
			if err != nil {
				return nil, err
			}
			files = append(files, f)
			for _, decl := range f.Decls {
				if fd, ok := decl.(*ast.FuncDecl); ok {
					i := 0
					for _, fl := range fd.Type.Params.List {
						for _, n := range fl.Names {
							if n.Name == "format" {
								formatFuncs[fd.Name.Name] = i
							}
							i++
						}
					}
				}
				if gd, ok := decl.(*ast.GenDecl); ok && gd.Tok == token.CONST {
					for _, sp := range gd.Specs {
						vs := sp.(*ast.ValueSpec)
						for i, n := range vs.Names {
							if i < len(vs.Values) {
								consts[n.Name] = vs.Values[i]
							}
						}
					}
				}
			}
		}
		for _, f := range files {
			add := func(e ast.Expr) {
				if id, ok := e.(*ast.Ident); ok && consts[id.Name] != nil {
					e = consts[id.Name]
				}
				parts, ok := reasonParts(e)
				if !ok {
					return
				}
				text, re := reasonPattern(parts)
				at := e.Pos()
				if c, ok := e.(*ast.CallExpr); ok && c.Fun == sprintf {
					at = c.Lparen // a constructor's format, or a table's
				}
				pos := fset.Position(at)
				p, _ := filepath.Rel(root, pos.Filename)
				key := fmt.Sprintf("%s:%d", p, pos.Line)
				if text == "" || seen[key+text] {
					return
				}
				seen[key+text] = true
				sites = append(sites, reasonSite{key, text, re})
			}
			var funcs []*ast.FuncType
			var names []string
			var visit func(n ast.Node) bool
			visit = func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.FuncDecl:
					if notReasons[n.Name.Name] || n.Body == nil {
						return false
					}
					funcs, names = append(funcs, n.Type), append(names, n.Name.Name)
					ast.Inspect(n.Body, visit)
					funcs, names = funcs[:len(funcs)-1], names[:len(names)-1]
					return false
				case *ast.FuncLit:
					funcs, names = append(funcs, n.Type), append(names, "")
					ast.Inspect(n.Body, visit)
					funcs, names = funcs[:len(funcs)-1], names[:len(names)-1]
					return false
				case *ast.ReturnStmt:
					if len(funcs) == 0 {
						return true
					}
					ft := funcs[len(funcs)-1]
					if ft.Results == nil {
						return true
					}
					var types []ast.Expr
					for _, fl := range ft.Results.List {
						k := max(1, len(fl.Names))
						for range k {
							types = append(types, fl.Type)
						}
					}
					if len(types) != len(n.Results) {
						return true
					}
					skip, hasSkip := -1, false
					if len(names) > 0 {
						skip, hasSkip = notReasonResult[names[len(names)-1]]
					}
					for i, r := range n.Results {
						if hasSkip && i == skip {
							continue
						}
						if id, ok := types[i].(*ast.Ident); ok && id.Name == "string" {
							add(r)
						}
					}
				case *ast.AssignStmt:
					if len(n.Lhs) != len(n.Rhs) {
						return true
					}
					for i, l := range n.Lhs {
						if isReasonName(l) {
							add(n.Rhs[i])
						}
					}
				case *ast.KeyValueExpr:
					if isReasonName(n.Key) {
						add(n.Value)
					}
				case *ast.CallExpr:
					var name string
					switch fn := n.Fun.(type) {
					case *ast.Ident:
						name = fn.Name
					case *ast.SelectorExpr:
						name = fn.Sel.Name
					}
					if i, ok := formatFuncs[name]; ok && i < len(n.Args) {
						add(&ast.CallExpr{Fun: sprintf, Args: n.Args[i:], Lparen: n.Args[i].Pos()})
					}
				case *ast.CompositeLit:
					// A table of reasons: []struct{...; say string}{{..., "x is %g"}, ...}.
					at, ok := n.Type.(*ast.ArrayType)
					if !ok {
						return true
					}
					st, ok := at.Elt.(*ast.StructType)
					if !ok {
						return true
					}
					idx, i := -1, 0
					for _, fl := range st.Fields.List {
						for _, fn := range fl.Names {
							if isReasonName(fn) {
								idx = i
							}
							i++
						}
					}
					for _, el := range n.Elts {
						if cl, ok := el.(*ast.CompositeLit); ok && idx >= 0 && idx < len(cl.Elts) {
							if e := cl.Elts[idx]; !isKeyValue(e) {
								add(&ast.CallExpr{Fun: sprintf, Args: []ast.Expr{e}, Lparen: e.Pos()})
							}
						}
					}
				}
				return true
			}
			ast.Inspect(f, visit)
		}
	}
	return sites, nil
}

func isKeyValue(e ast.Expr) bool { _, ok := e.(*ast.KeyValueExpr); return ok }

// sprintf is fmt.Sprintf, for a reason constructor's call read as one.
var sprintf = &ast.SelectorExpr{X: ast.NewIdent("fmt"), Sel: ast.NewIdent("Sprintf")}

func isReasonName(e ast.Expr) bool {
	var name string
	switch e := e.(type) {
	case *ast.Ident:
		name = e.Name
	case *ast.SelectorExpr:
		name = e.Sel.Name
	}
	switch strings.ToLower(name) {
	case "why", "reason", "blocker", "say":
		return true
	}
	return false
}

// reasonParts splits a string expression into its literal texts, "" standing for a
// computed part; ok is false when the expression holds no literal text.
func reasonParts(e ast.Expr) (parts []string, ok bool) {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind != token.STRING {
			return nil, false
		}
		s, err := strconv.Unquote(e.Value)
		if err != nil || s == "" {
			return nil, false
		}
		return []string{s}, true
	case *ast.BinaryExpr:
		if e.Op != token.ADD {
			return nil, false
		}
		l, lok := reasonParts(e.X)
		r, rok := reasonParts(e.Y)
		if !lok {
			l = []string{""}
		}
		if !rok {
			r = []string{""}
		}
		return append(l, r...), lok || rok
	case *ast.ParenExpr:
		return reasonParts(e.X)
	case *ast.CallExpr:
		sel, isSel := e.Fun.(*ast.SelectorExpr)
		if !isSel || sel.Sel.Name != "Sprintf" || len(e.Args) == 0 {
			return nil, false
		}
		if x, isID := sel.X.(*ast.Ident); !isID || x.Name != "fmt" {
			return nil, false
		}
		fp, ok := reasonParts(e.Args[0])
		if !ok {
			return nil, false
		}
		for _, p := range fp {
			if p == "" {
				parts = append(parts, "")
				continue
			}
			last := 0
			for _, loc := range verb.FindAllStringIndex(p, -1) {
				if loc[0] > last {
					parts = append(parts, p[last:loc[0]])
				}
				switch v := p[loc[1]-1]; {
				case v == '%':
					parts = append(parts, "%")
				case strings.IndexByte("dgfeGx", v) >= 0:
					parts = append(parts, numberPart)
				default:
					parts = append(parts, "")
				}
				last = loc[1]
			}
			if last < len(p) {
				parts = append(parts, p[last:])
			}
		}
		return parts, true
	}
	return nil, false
}

// numberPart stands for a number formatted into a reason (%d, %g, ...).
const numberPart = "\x00number"

// reasonPattern turns parts into display text and an unanchored regexp; text is ""
// when the literal parts say too little to be a reason of their own (a separator such
// as ": ").
func reasonPattern(parts []string) (string, *regexp.Regexp) {
	var text, re strings.Builder
	letters := 0
	// A reason stands at the start of the text, or after a prefix that says where it
	// applies ("Q: ", "mask of an unknown form: "), and ends at the end or before more
	// ("; "): so "…: axis %d" is not produced by "score term t: axis 3 is 3 where ...".
	re.WriteString(`(?:^|: |; )`)
	for _, p := range parts {
		switch p {
		case "":
			text.WriteString("…")
			re.WriteString("(?s:.*)")
			continue
		case numberPart:
			text.WriteString("…")
			re.WriteString(`[-+.\w]+`)
			continue
		}
		text.WriteString(p)
		re.WriteString(regexp.QuoteMeta(p))
		for _, c := range p {
			if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' {
				letters++
			}
		}
	}
	if letters < 3 {
		return "", nil
	}
	re.WriteString(`(?:$|: |; )`)
	return strings.TrimSpace(text.String()), regexp.MustCompile(re.String())
}

var listReasons = flag.Bool("reasons", false, "list the refusal reasons in the source and whether a test produced each")

// TestMain checks, after a run of the whole package, that every reason is produced by a
// test or listed as untested. Tests that need ONNX Runtime produce some of the reasons,
// so without it (and without QCC_REQUIRE_ORT=1, where they fail instead) the check only
// reports.
func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	whole := flag.Lookup("test.run").Value.String() == "" && flag.Lookup("test.skip").Value.String() == ""
	if code == 0 && (whole || *listReasons) {
		_, ortErr := ort.Available()
		enforce := whole && !*listReasons && (ortErr == nil || os.Getenv(ort.EnvRequire) == "1")
		if msg := checkReasons(); msg != "" {
			if enforce {
				fmt.Fprintln(os.Stderr, "FAIL: refusal reasons:\n"+msg)
				code = 1
			} else {
				fmt.Fprintln(os.Stderr, "refusal reasons (not checked: a partial run, or no ONNX Runtime):\n"+msg)
			}
		}
	}
	os.Exit(code)
}

// checkReasons compares the reasons in the source with the ones tests produced and the
// list of untested ones; it returns what is wrong, or "".
func checkReasons() string {
	root, err := modroot.Find()
	if err != nil {
		return err.Error()
	}
	sites, err := collectReasons(root, reasonDirs)
	if err != nil {
		return err.Error()
	}
	listed, err := readUntested(filepath.Join(root, "patterns", "transformer", untestedReasonsFile))
	if err != nil {
		return err.Error()
	}
	var obs []string
	for r := range observed {
		obs = append(obs, r)
	}
	sort.Strings(obs)
	var problems []string
	inSource := map[string]bool{}
	tested := 0
	for _, s := range sites {
		inSource[s.text] = true
		hit := false
		for _, o := range obs {
			if s.re.MatchString(o) {
				hit = true
				break
			}
		}
		if *listReasons {
			fmt.Printf("%-5v %-40s %s\n", hit, s.pos, s.text)
		}
		switch {
		case hit:
			tested++
			if listed[s.text] {
				problems = append(problems, fmt.Sprintf("%s: %q is produced by a test now: remove it from %s", s.pos, s.text, untestedReasonsFile))
			}
		case !listed[s.text]:
			problems = append(problems, fmt.Sprintf("%s: no test produces %q: assert it with expectReason, or list it in %s with why", s.pos, s.text, untestedReasonsFile))
		}
	}
	for text := range listed {
		if !inSource[text] {
			problems = append(problems, fmt.Sprintf("%s lists %q, which is no reason in the source", untestedReasonsFile, text))
		}
	}
	sort.Strings(problems)
	fmt.Fprintf(os.Stderr, "refusal reasons: %d in the source, %d produced by a test, %d listed as untested\n", len(sites), tested, len(listed))
	return strings.Join(problems, "\n")
}

// readUntested reads the list of untested reasons: one reason a line, as -reasons
// prints it (… for a computed part); lines starting with # say why.
func readUntested(file string) (map[string]bool, error) {
	out := map[string]bool{}
	data, err := os.ReadFile(file)
	if os.IsNotExist(err) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out[l] = true
		}
	}
	return out, nil
}
