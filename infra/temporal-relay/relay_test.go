package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func incoming(pairs ...string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs(pairs...))
}

func TestCheckPassesOnlyTheRightBearerKey(t *testing.T) {
	key := newAPIKey("s3cret")
	cases := []struct {
		name string
		ctx  context.Context
		ok   bool
	}{
		{"right key", incoming("authorization", "Bearer s3cret"), true},
		{"no metadata", context.Background(), false},
		{"no authorization", incoming("temporal-namespace", "default"), false},
		{"wrong key", incoming("authorization", "Bearer s3cret2"), false},
		{"key without scheme", incoming("authorization", "s3cret"), false},
		{"other scheme", incoming("authorization", "Basic s3cret"), false},
		{"lower-case scheme", incoming("authorization", "bearer s3cret"), false},
		{"empty key", incoming("authorization", "Bearer "), false},
		{"right and wrong", incoming("authorization", "Bearer s3cret", "authorization", "Bearer x"), false},
	}
	for _, c := range cases {
		err := key.check(c.ctx)
		if c.ok && err != nil {
			t.Errorf("%s: refused: %v", c.name, err)
		}
		if !c.ok && status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: want Unauthenticated, got %v", c.name, err)
		}
	}
}

func TestRefusalsDoNotEchoTheKey(t *testing.T) {
	err := newAPIKey("s3cret").check(incoming("authorization", "Bearer guess"))
	for _, secret := range []string{"s3cret", "guess"} {
		if msg := status.Convert(err).Message(); strings.Contains(msg, secret) {
			t.Errorf("message %q contains %q", msg, secret)
		}
	}
}

func contains(s, sub string) bool { return len(sub) > 0 && len(s) >= len(sub) && indexOf(s, sub) >= 0 }

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

func TestLoadKeyFromFileOrEnvironment(t *testing.T) {
	file := filepath.Join(t.TempDir(), "api-key")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(keyEnv, "from-env")
	if k, err := loadKey(file); err != nil || string(k.want) != "Bearer from-file" {
		t.Errorf("file: got %q, %v", k.want, err)
	}
	if k, err := loadKey(""); err != nil || string(k.want) != "Bearer from-env" {
		t.Errorf("env: got %q, %v", k.want, err)
	}
	t.Setenv(keyEnv, " ")
	if _, err := loadKey(""); err == nil {
		t.Error("a blank key was accepted")
	}
	if _, err := loadKey(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing key file was accepted")
	}
}

// seenBy records the metadata of the calls the upstream receives.
type seenBy struct {
	healthpb.HealthServer
	md chan metadata.MD
}

func (s seenBy) Check(ctx context.Context, r *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	s.md <- md
	return s.HealthServer.Check(ctx, r)
}

func serve(t *testing.T, server *grpc.Server) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = server.Serve(lis) }()
	t.Cleanup(server.Stop)
	return lis.Addr().String()
}

func TestRelayPassesCallsWithTheKeyOnAndTheKeyOff(t *testing.T) {
	upstream := grpc.NewServer()
	seen := seenBy{health.NewServer(), make(chan metadata.MD, 1)}
	healthpb.RegisterHealthServer(upstream, seen)
	conn, err := grpc.Dial(serve(t, upstream), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	target := serve(t, newServer(&relay{upstream: conn, key: newAPIKey("s3cret")}, insecure.NewCredentials()))
	client, err := grpc.Dial(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	stub := healthpb.NewHealthClient(client)

	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer s3cret", "temporal-namespace", "default")
	response, err := stub.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || response.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("through the relay: %v, %v", response, err)
	}
	md := <-seen.md
	if len(md.Get("authorization")) != 0 || md.Get("temporal-namespace")[0] != "default" {
		t.Errorf("upstream saw %v: want the client's headers without the key", md)
	}

	_, err = stub.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "unknown"})
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("without a key: want Unauthenticated, got %v", err)
	}
	_, err = stub.Check(ctx, &healthpb.HealthCheckRequest{Service: "unknown"})
	if status.Code(err) != codes.NotFound {
		t.Errorf("the upstream's status is relayed: want NotFound, got %v", err)
	}
}
