"""The ComfyUI host and the test harness: provisioning, the server, the browser, real models with seeded weights."""
