import { MAX_PAGE_SIZE } from "../schemas.js";

/** REST `limit` → the service's page_size: absent means the service's default; above the maximum is capped. */
export function pageSize(limit: number | undefined): number {
  return limit === undefined ? 0 : Math.min(limit, MAX_PAGE_SIZE);
}
