// Package update owns the -update test flag. Every package with tests imports it, so that
// `go test ./... -update` is accepted by each test binary and refreshes golden files.
package update

import "flag"

// Golden is true when golden files should be rewritten instead of compared.
var Golden = flag.Bool("update", false, "rewrite golden files instead of comparing against them")
