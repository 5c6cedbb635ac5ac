// Package dispenser embeds the files the binary serves from the repository
// root (the OpenAPI contract).
package dispenser

import _ "embed"

// OpenAPI is the HTTP contract served at GET /openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte
