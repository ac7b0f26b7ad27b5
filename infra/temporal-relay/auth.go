package main

import (
	"context"
	"crypto/subtle"
	"errors"
	"os"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// keyEnv holds the API key when no -api-key-file is given.
const keyEnv = "TEMPORAL_RELAY_API_KEY"

// apiKey is the `authorization` value every call must carry.
type apiKey struct{ want []byte }

func newAPIKey(key string) apiKey { return apiKey{want: []byte("Bearer " + key)} }

// check passes a call whose one `authorization` value is the key, compared in constant time.
func (k apiKey) check(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	got := md.Get("authorization")
	if len(got) == 1 && subtle.ConstantTimeCompare([]byte(got[0]), k.want) == 1 {
		return nil
	}
	if len(got) == 0 {
		return status.Error(codes.Unauthenticated, "no API key: send `authorization: Bearer <key>`")
	}
	return status.Error(codes.Unauthenticated, "wrong API key")
}

// loadKey reads the key from `file` (surrounding whitespace dropped) or, without one, keyEnv.
func loadKey(file string) (apiKey, error) {
	key := os.Getenv(keyEnv)
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return apiKey{}, err
		}
		key = string(b)
	}
	key = strings.TrimSpace(key)
	if key == "" {
		return apiKey{}, errors.New("no API key: give -api-key-file or set " + keyEnv)
	}
	return newAPIKey(key), nil
}
