// Validates an OpenAPI document (file given as the argument) with swagger-parser:
// structure against the OpenAPI schema, and every $ref resolvable.
// Prints `valid <version>` and exits 0, or prints the problem and exits 1.
import SwaggerParser from '@apidevtools/swagger-parser';

const file = process.argv[2];
try {
  const api = await SwaggerParser.validate(file);
  console.log(`valid ${api.openapi}`);
} catch (e) {
  console.log(`invalid: ${e.message}`);
  process.exit(1);
}
