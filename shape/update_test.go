package shape

// The -update flag is shared by every test binary so that go test ./... -update works.

import _ "github.com/qcc-dev/qcc/internal/update"
