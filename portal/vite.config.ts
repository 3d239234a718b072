import { sveltekit } from "@sveltejs/kit/vite";
import { defineConfig } from "vite";

export default defineConfig({
  plugins: [sveltekit()],
  // The portal imports the service's generated protobuf code from ../service/src/gen.
  server: { fs: { allow: [".."] } },
  build: { reportCompressedSize: false },
});
