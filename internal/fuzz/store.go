package fuzz

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/qcc-dev/qcc/ir/text"
	"github.com/qcc-dev/qcc/patterns/transformer"
)

// A stored case is the model in ONNX text syntax (every tensor written out) after a
// header of '#' lines, which the text parser skips:
//
//	# failure: mismatch in fold: ...
//	# class: nm-softmax-axis
//	# seed: 1234
//	# witness: Softmax_24 forbid Attention
//
// The seed makes the replay use the same random inputs.

// Encode writes c as a stored case.
func Encode(c *Case, seed int64, f Failure) string {
	var b strings.Builder
	detail, _, _ := strings.Cut(f.String(), "\n")
	fmt.Fprintf(&b, "# failure: %s\n# class: %s\n# seed: %d\n", detail, c.Class, seed)
	for _, w := range c.Witnesses {
		verb := "expect"
		if w.Forbid {
			verb = "forbid"
		}
		ks := make([]string, len(w.Kinds))
		for i, k := range w.Kinds {
			ks[i] = string(k)
		}
		fmt.Fprintf(&b, "# witness: %s %s %s\n", w.Node, verb, strings.Join(ks, ","))
	}
	b.WriteString(text.Sprint(c.Model, text.Options{MaxElems: -1}))
	return b.String()
}

var headerRE = regexp.MustCompile(`(?m)^# (class|seed|witness): (.*)$`)

// Decode reads a stored case and its seed.
func Decode(src string) (*Case, int64, error) {
	m, err := text.Parse(src)
	if err != nil {
		return nil, 0, err
	}
	c := &Case{Model: m, Class: "dag"}
	var seed int64
	for _, h := range headerRE.FindAllStringSubmatch(src, -1) {
		switch h[1] {
		case "class":
			c.Class = h[2]
			c.NearMiss = IsNearMiss(c.Class)
		case "seed":
			if seed, err = strconv.ParseInt(h[2], 10, 64); err != nil {
				return nil, 0, fmt.Errorf("seed: %v", err)
			}
		case "witness":
			f := strings.Fields(h[2])
			if len(f) != 3 || (f[1] != "forbid" && f[1] != "expect") {
				return nil, 0, fmt.Errorf("witness %q: want NODE forbid|expect KIND,KIND", h[2])
			}
			w := Witness{Node: f[0], Forbid: f[1] == "forbid"}
			for _, k := range strings.Split(f[2], ",") {
				w.Kinds = append(w.Kinds, transformer.Kind(k))
			}
			c.Witnesses = append(c.Witnesses, w)
		}
	}
	return c, seed, nil
}

// Store writes the case into dir as KIND-PIPELINE-CLASS-SEED.txt and returns the path.
func Store(dir string, c *Case, seed int64, f Failure) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	pipe := strings.NewReplacer(",", "+", "<", "", ">", "", "=", "-", ";", "-", ":", "").Replace(f.Pipeline)
	if pipe == "" {
		pipe = "model"
	}
	name := fmt.Sprintf("%s-%s-%s-%d.txt", f.Kind, pipe, c.Class, seed)
	p := filepath.Join(dir, name)
	return p, os.WriteFile(p, []byte(Encode(c, seed, f)), 0o644)
}
