import { sveltekit } from "@sveltejs/kit/vite";
import { defineConfig } from "vite";

export default defineConfig({
  plugins: [sveltekit()],
  // server.fs.allow is left at Vite's default, the npm workspace's root (the repository, found by
  // package.json's "workspaces"): the portal imports @provider-credentials/wire from packages/wire.
  build: { reportCompressedSize: false },
});
