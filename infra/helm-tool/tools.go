//go:build tools

// Helm, pinned here and built by cryptopredict/stack/tools.py (`go install` from inside this module).
package tools

import (
	_ "helm.sh/helm/v4/cmd/helm"
)
