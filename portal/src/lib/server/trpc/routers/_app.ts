import { createCallerFactory, router } from "../trpc.js";
import { accountsRouter } from "./accounts.js";
import { auditRouter } from "./audit.js";
import { credentialsRouter } from "./credentials.js";
import { organizationsRouter } from "./organizations.js";
import { selectionStrategiesRouter } from "./selection-strategies.js";
import { resolutionRouter } from "./resolution.js";
import { teamsRouter } from "./teams.js";
import { tokensRouter } from "./tokens.js";

/** The root router: the pages call it over /api/trpc, and /api/... serves it as REST. */
export const appRouter = router({
  credentials: credentialsRouter,
  selectionStrategies: selectionStrategiesRouter,
  resolution: resolutionRouter,
  organizations: organizationsRouter,
  teams: teamsRouter,
  audit: auditRouter,
  tokens: tokensRouter,
  accounts: accountsRouter,
});

export type AppRouter = typeof appRouter;

export const createCaller = createCallerFactory(appRouter);
