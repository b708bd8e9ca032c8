module glider-gun.local/pod-runner

go 1.24
