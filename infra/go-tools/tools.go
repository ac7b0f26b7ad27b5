//go:build tools

package tools

import (
	_ "github.com/fullstorydev/grpcurl/cmd/grpcurl"
	_ "github.com/temporalio/tctl/cmd/tctl"
)
