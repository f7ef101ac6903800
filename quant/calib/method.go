package calib

import (
	"fmt"
	"strconv"
	"strings"
)

// MethodKind is a range-selection algorithm.
type MethodKind int

const (
	Max        MethodKind = iota + 1 // the absolute maximum seen
	Percentile                       // the P-th percentile of |x|
	Entropy                          // TensorRT's entropy (KL divergence) calibration
	MSE                              // the threshold of least expected int8 quantization error
)

// Method picks a tensor's amax from its histogram. The zero Method is invalid.
type Method struct {
	Kind MethodKind
	P    float64 // the percentile, for Percentile
}

// String gives the form ParseMethod reads: max, percentile:99.99, entropy, mse.
func (m Method) String() string {
	switch m.Kind {
	case Max:
		return "max"
	case Percentile:
		return "percentile:" + strconv.FormatFloat(m.P, 'g', -1, 64)
	case Entropy:
		return "entropy"
	case MSE:
		return "mse"
	}
	return fmt.Sprintf("Method(%d)", int(m.Kind))
}

const methodHelp = "want max, percentile:P (0 < P <= 100, e.g. percentile:99.99), entropy or mse"

// ParseMethod reads a method name: max, percentile:P, entropy or mse (case-insensitive).
func ParseMethod(s string) (Method, error) {
	name, arg, hasArg := strings.Cut(strings.TrimSpace(s), ":")
	switch strings.ToLower(name) {
	case "max", "entropy", "mse":
		if hasArg {
			return Method{}, fmt.Errorf("calib: method %q takes no argument (%s)", s, methodHelp)
		}
		switch strings.ToLower(name) {
		case "max":
			return Method{Kind: Max}, nil
		case "entropy":
			return Method{Kind: Entropy}, nil
		}
		return Method{Kind: MSE}, nil
	case "percentile":
		if !hasArg || arg == "" {
			return Method{}, fmt.Errorf("calib: method %q needs the percentile, e.g. percentile:99.99", s)
		}
		p, err := strconv.ParseFloat(arg, 64)
		if err != nil {
			return Method{}, fmt.Errorf("calib: method %q: %q is not a number (%s)", s, arg, methodHelp)
		}
		if !(p > 0 && p <= 100) {
			return Method{}, fmt.Errorf("calib: method %q: the percentile must be in (0, 100]", s)
		}
		return Method{Kind: Percentile, P: p}, nil
	}
	return Method{}, fmt.Errorf("calib: unknown calibration method %q (%s)", s, methodHelp)
}
