import { json } from "@sveltejs/kit";
import type { RequestHandler } from "./$types";

/** Liveness of the portal process (the launcher waits for it); says nothing about the service. */
export const GET: RequestHandler = () => json({ status: "ok" });
